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
{{- include "clara-workflow.validateGraph" (dict "values" $v "workflow" $wf) }}
{{- end }}

{{/*
The workflow as a graph: named inputs and outputs (io) and waits must form a DAG over
the workflow's own stages. Each failure names the culprit.
Context: (dict "values" .Values "workflow" <the active workflow>).
*/}}
{{- define "clara-workflow.validateGraph" -}}
{{- $v := .values }}
{{- $wf := .workflow }}
{{- $id := $v.workflow.id }}
{{- $stages := $wf.stages }}
{{- $io := $wf.io | default dict }}
{{- $lockOwner := dict }}
{{- range $s := $stages }}{{ $_ := set $lockOwner (index $v.stages $s).lockName $s }}{{ end }}
{{- range $s, $spec := $io }}
{{- if not (has $s $stages) }}
{{- fail (printf "workflow %q: io names stage %q, which is not in its stages" $id $s) }}
{{- end }}
{{- end }}
{{- range $s := $stages }}
{{- $spec := index $io $s | default dict }}
{{- $outNames := dict }}
{{- range $out := ($spec.outputs | default list) }}
{{- if not $out.name }}{{ fail (printf "workflow %q: an output of stage %q has no name" $id $s) }}{{ end }}
{{- if hasKey $outNames $out.name }}{{ fail (printf "workflow %q: stage %q has two outputs named %q" $id $s $out.name) }}{{ end }}
{{- $_ := set $outNames $out.name true }}
{{- if not (hasPrefix "/" (toString $out.path)) }}{{ fail (printf "workflow %q: output %q of stage %q needs an absolute path" $id $out.name $s) }}{{ end }}
{{- end }}
{{- $paths := dict }}
{{- range $in := ($spec.inputs | default list) }}
{{- if not (hasPrefix "/" (toString $in.path)) }}{{ fail (printf "workflow %q: an input of stage %q needs an absolute path" $id $s) }}{{ end }}
{{- if hasKey $paths $in.path }}{{ fail (printf "workflow %q: stage %q mounts two inputs at %s" $id $s $in.path) }}{{ end }}
{{- $_ := set $paths $in.path true }}
{{- if $in.from }}
{{- if not (has $in.from $stages) }}
{{- fail (printf "workflow %q: stage %q reads from %q, which is not a stage of the workflow" $id $s $in.from) }}
{{- end }}
{{- $up := index $io $in.from | default dict }}
{{- $upOuts := list }}
{{- range $o := ($up.outputs | default list) }}{{ $upOuts = append $upOuts $o.name }}{{ end }}
{{- if $in.name }}
{{- if not (has $in.name $upOuts) }}
{{- fail (printf "workflow %q: stage %q reads %s/%s, an output that no stage writes" $id $s $in.from $in.name) }}
{{- end }}
{{- else if ne (len $upOuts) 1 }}
{{- fail (printf "workflow %q: stage %q reads from %q without naming which of its %d outputs" $id $s $in.from (len $upOuts)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Edges: io inputs and waitLocks; then peel stages with no pending upstream (Kahn). */}}
{{- $upstream := dict }}
{{- range $i, $s := $stages }}
{{- $ups := list }}
{{- $spec := index $io $s | default dict }}
{{- range $in := ($spec.inputs | default list) }}{{ if $in.from }}{{ $ups = append $ups $in.from }}{{ end }}{{ end }}
{{- if $wf.waitLocks }}
{{- range $lock := splitList "," (index $wf.waitLocks $i) }}
{{- $lock = trim $lock }}
{{- if $lock }}
{{- if not (hasKey $lockOwner $lock) }}
{{- fail (printf "workflow %q: stage %q waits for %s, which no stage of the workflow writes" $id $s $lock) }}
{{- end }}
{{- $ups = append $ups (index $lockOwner $lock) }}
{{- end }}
{{- end }}
{{- end }}
{{- if has $s $ups }}{{ fail (printf "workflow %q: stage %q waits for itself" $id $s) }}{{ end }}
{{- $_ := set $upstream $s (uniq $ups) }}
{{- end }}
{{- $done := dict }}
{{- range $round := $stages }}
{{- if eq (len $done) (len $stages) }}{{ break }}{{ end }}
{{- range $s := $stages }}
{{- if not (hasKey $done $s) }}
{{- $ready := true }}
{{- range $u := index $upstream $s }}{{ if not (hasKey $done $u) }}{{ $ready = false }}{{ end }}{{ end }}
{{- if $ready }}{{ $_ := set $done $s true }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- if lt (len $done) (len $stages) }}
{{- $stuck := list }}
{{- range $s := $stages }}{{ if not (hasKey $done $s) }}{{ $stuck = append $stuck $s }}{{ end }}{{ end }}
{{- fail (printf "workflow %q has a cycle among stages %s" $id (join ", " $stuck)) }}
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
{{- /* validate has checked the workflow; index it directly (a JSON round trip per call made 200 stages quadratic) */}}
{{- $wf := index $v.workflows $v.workflow.id }}
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
{{- $place := dict "index" $index "first" (eq $index 0) "last" (eq $index $last) "waitName" $wait "args" $args "inFolder" $in "outFolder" $out }}
{{- if and $wf.io (hasKey $wf.io $name) }}
{{- $spec := index $wf.io $name }}
{{- $inputs := list }}
{{- $inPaths := list }}
{{- $from := list }}
{{- range $input := ($spec.inputs | default list) }}
{{- if $input.from }}
{{- $outName := $input.name }}
{{- if not $outName }}{{ $outName = (index (index $wf.io $input.from).outputs 0).name }}{{ end }}
{{- $sub := printf "%s/%s" $input.from $outName }}
{{- $inputs = append $inputs (dict "path" $input.path "subPath" $sub) }}
{{- $inPaths = append $inPaths (printf "%s:%s" $sub $input.path) }}
{{- $from = append $from $input.from }}
{{- else }}
{{- $inputs = append $inputs (dict "path" $input.path "subPath" ($v.dicomAdapter.input | default "input")) }}
{{- $inPaths = append $inPaths (printf "payload:%s" $input.path) }}
{{- end }}
{{- end }}
{{- $outputs := list }}
{{- $outPaths := list }}
{{- range $output := ($spec.outputs | default list) }}
{{- $sub := printf "%s/%s" $name $output.name }}
{{- $outputs = append $outputs (dict "path" $output.path "subPath" $sub) }}
{{- $outPaths = append $outPaths (printf "%s:%s" $sub $output.path) }}
{{- end }}
{{- if not $wf.waitLocks }}
{{- $locks := list }}
{{- range $s := $stages }}{{ if has $s $from }}{{ $locks = append $locks (index $v.stages $s).lockName }}{{ end }}{{ end }}
{{- $_ := set $place "waitName" (join "," $locks) }}
{{- end }}
{{- $_ := set $place "io" true }}
{{- $_ := set $place "inputs" $inputs }}
{{- $_ := set $place "outputs" $outputs }}
{{- $_ := set $place "inputPaths" (join ";" $inPaths) }}
{{- $_ := set $place "outputPaths" (join ";" $outPaths) }}
{{- end }}
{{- toJson $place }}
{{- end }}

{{/*
Mounts of a stage with named inputs and outputs (workflows.<id>.io): each at its path.
Context: the stage's place (clara-workflow.stagePlace).
*/}}
{{- define "clara-workflow.ioMounts" -}}
{{- range $input := .inputs }}
# Input {{ $input.subPath }}
- name: clara-payload-volume
  mountPath: {{ $input.path | quote }}
  subPath: {{ $input.subPath | quote }}
{{- end }}
{{- range $output := .outputs }}
# Output {{ $output.subPath }}
- name: clara-payload-volume
  mountPath: {{ $output.path | quote }}
  subPath: {{ $output.subPath | quote }}
{{- end }}
{{- end }}

{{/*
Environment beyond the NVIDIA_CLARA_* variables: Clara's INPUTPATHS/OUTPUTPATHS for io
stages (what clara_payload reads) and the stage's own `env` (e.g. imported variables).
Context: (dict "place" <stagePlace> "stage" <the stage's values>).
*/}}
{{- define "clara-workflow.extraEnv" -}}
{{- if .place.io }}
- name: NVIDIA_CLARA_INPUTPATHS
  value: {{ .place.inputPaths | quote }}
- name: NVIDIA_CLARA_OUTPUTPATHS
  value: {{ .place.outputPaths | quote }}
{{- end }}
{{- /* Run timeout and retries (docs/lock-protocol.md), only when the stage sets them. */}}
{{- if hasKey .stage "runTimeout" }}
- name: NVIDIA_CLARA_RUNTIMEOUT
  value: {{ .stage.runTimeout | toString | quote }}
{{- end }}
{{- if hasKey .stage "retries" }}
- name: NVIDIA_CLARA_RETRIES
  value: {{ .stage.retries | toString | quote }}
{{- end }}
{{- if hasKey .stage "retryBackoff" }}
- name: NVIDIA_CLARA_RETRYBACKOFF
  value: {{ .stage.retryBackoff | toString | quote }}
{{- end }}
{{- range $key, $value := .stage.env }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
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
