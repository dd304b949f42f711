{{/*
Names and labels, in the style of `helm create`.
*/}}
{{- define "clara-workflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clara-workflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "clara-workflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clara-workflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clara-workflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clara-workflow.labels" -}}
helm.sh/chart: {{ include "clara-workflow.chart" . }}
{{ include "clara-workflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: workflow
clara.nvidia.com/job-id: {{ .Values.job.id | quote }}
{{- end }}

{{/*
Payload volume names; the PersistentVolume is cluster-wide, so the job id keeps it unique.
*/}}
{{- define "clara-workflow.volumeName" -}}
pv-clara-payload-volume-{{ .Values.job.id }}
{{- end }}

{{- define "clara-workflow.claimName" -}}
pv-clara-payload-volume-claim-{{ .Values.job.id }}
{{- end }}

{{- define "clara-workflow.storageClassName" -}}
pv-clara-payload-{{ .Values.job.id }}
{{- end }}

{{- define "clara-workflow.payloadPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.workflow.payloads.hostPath) .Values.job.id }}
{{- end }}
