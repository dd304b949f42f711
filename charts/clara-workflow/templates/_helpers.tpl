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

{{/*
The active workflow (workflows.<workflow.id>); fails with a message naming the id.
Context: .Values
*/}}
{{- define "clara-workflow.activeWorkflow" -}}
{{- $id := .workflow.id }}
{{- if not (hasKey (.workflows | default dict) $id) }}
{{- fail (printf "workflow.id %q is not defined under workflows (defined: %s)" $id (keys (.workflows | default dict) | sortAlpha | join ", ")) }}
{{- end }}
{{- toJson (index .workflows $id) }}
{{- end }}

{{/*
Checks every run-time value before anything renders, so that a mistake is reported as
one message naming what is wrong instead of a nil-pointer error deep in a stage file.
Context: the root context.
*/}}
{{- define "clara-workflow.validate" -}}
{{- $v := .Values }}
{{- if not (regexMatch "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$" (toString $v.job.id)) }}
{{- fail (printf "job.id %q is not a UUID (e.g. 00000000-0000-0000-0000-000000000000)" (toString $v.job.id)) }}
{{- end }}
{{- if not (hasPrefix "/" (toString $v.workflow.payloads.hostPath)) }}
{{- fail (printf "workflow.payloads.hostPath %q must be an absolute path" (toString $v.workflow.payloads.hostPath)) }}
{{- end }}
{{- $wf := include "clara-workflow.activeWorkflow" $v | fromJson }}
{{- $stages := $wf.stages | default list }}
{{- if not $stages }}
{{- fail (printf "workflow %q has no stages" $v.workflow.id) }}
{{- end }}
{{- $n := len $stages }}
{{- range $key := list "waitLocks" "args" }}
{{- if and (hasKey $wf $key) (ne (len (index $wf $key)) $n) }}
{{- fail (printf "workflow %q: %s has %d items but stages has %d" $v.workflow.id $key (len (index $wf $key)) $n) }}
{{- end }}
{{- end }}
{{- if and (hasKey $wf "ioFolders") (ne (len $wf.ioFolders) (add $n 1)) }}
{{- fail (printf "workflow %q: ioFolders has %d items but needs %d (one more than stages)" $v.workflow.id (len $wf.ioFolders) (add $n 1)) }}
{{- end }}
{{- $seen := dict }}
{{- range $stage := $stages }}
{{- if hasKey $seen $stage }}
{{- fail (printf "workflow %q names stage %q twice" $v.workflow.id $stage) }}
{{- end }}
{{- $_ := set $seen $stage true }}
{{- $values := index ($v.stages | default dict) $stage }}
{{- if not $values }}
{{- fail (printf "workflow %q uses stage %q, which has no values: add stages.%s to values.yaml (`clara-wf cs %s` scaffolds it)" $v.workflow.id $stage $stage $stage) }}
{{- end }}
{{- range $key := list "appDir" "lockDir" "lockName" "logName" }}
{{- if not (index $values $key) }}
{{- fail (printf "stage %q: stages.%s.%s is required" $stage $stage $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where a stage stands in the active workflow and what it gets from it.
Context: (dict "values" .Values "stage" NAME). Output: JSON
{index, first, last, waitName, args, inFolder, outFolder}.
*/}}
{{- define "clara-workflow.stagePlace" -}}
{{- $v := .values }}
{{- $name := .stage }}
{{- $wf := include "clara-workflow.activeWorkflow" $v | fromJson }}
{{- $stages := $wf.stages }}
{{- $index := -1 }}
{{- range $i, $s := $stages }}
{{- if eq $s $name }}{{ $index = $i }}{{ end }}
{{- end }}
{{- if lt $index 0 }}
{{- fail (printf "stage %q is not part of workflow %q" $name $v.workflow.id) }}
{{- end }}
{{- $last := sub (len $stages) 1 }}
{{- $wait := "" }}
{{- if $wf.waitLocks }}{{ $wait = index $wf.waitLocks $index }}{{ end }}
{{- $args := list }}
{{- if $wf.args }}
{{- $a := index $wf.args $index }}
{{- if kindIs "slice" $a }}{{ $args = $a }}{{ else if $a }}{{ $args = list $a }}{{ end }}
{{- end }}
{{- $in := "" }}
{{- $out := "" }}
{{- if $wf.ioFolders }}
{{- $in = index $wf.ioFolders $index }}
{{- $out = index $wf.ioFolders (add $index 1) }}
{{- else }}
{{- if eq $index 0 }}
{{- $in = printf "%s/input" $name }}
{{- else }}
{{- $in = printf "%s/output" (index $stages (sub $index 1)) }}
{{- end }}
{{- $out = printf "%s/output" $name }}
{{- end }}
{{- if and $v.dicomAdapter.input (eq $index 0) }}{{ $in = $v.dicomAdapter.input }}{{ end }}
{{- if and $v.dicomAdapter.output (eq $index $last) }}{{ $out = $v.dicomAdapter.output }}{{ end }}
{{- toJson (dict "index" $index "first" (eq $index 0) "last" (eq $index $last) "waitName" $wait "args" $args "inFolder" $in "outFolder" $out) }}
{{- end }}

{{/*
The container's command and args: the stage's program (plus the workflow's args) run
under the stage runner, which sequences the stages of the pod through lock files.
Context: (dict "values" .Values "stage" NAME).
*/}}
{{- define "clara-workflow.stageCommand" -}}
{{- $stage := index .values.stages .stage }}
{{- $place := include "clara-workflow.stagePlace" . | fromJson }}
{{- $program := concat ($stage.command | default list) ($place.args | default list) }}
{{- if $stage.runner }}
{{- if not $stage.command }}
{{- fail (printf "stage %q: stages.%s.command is empty, but the stage runner needs the program to run" .stage .stage) }}
{{- end }}
command: {{ toJson $stage.runner }}
args: {{ toJson $program }}
{{- else }}
{{- with $stage.command }}
command: {{ toJson . }}
{{- end }}
{{- with $place.args }}
args: {{ toJson . }}
{{- end }}
{{- end }}
{{- end }}
