{{- define "dicom-adapter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dicom-adapter.fullname" -}}
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

{{- define "dicom-adapter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dicom-adapter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dicom-adapter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dicom-adapter.labels" -}}
helm.sh/chart: {{ include "dicom-adapter.chart" . }}
{{ include "dicom-adapter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dicom-adapter
{{- end }}

{{- define "dicom-adapter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dicom-adapter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The configuration file: values.config with the SCP port filled in from .Values.port. */}}
{{- define "dicom-adapter.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $dicom := get $config "dicom" | default dict }}
{{- $scp := get $dicom "scp" | default dict }}
{{- if not (hasKey $scp "port") }}{{ $_ := set $scp "port" (int .Values.port) }}{{ end }}
{{- $_ := set $dicom "scp" $scp }}
{{- $_ := set $config "dicom" $dicom }}
{{- $_ := set $config "engine" "kubernetes" }}
{{- toYaml $config }}
{{- end }}
