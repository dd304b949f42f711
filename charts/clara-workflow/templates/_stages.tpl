{{/* The active workflow and each stage's place in it: folders, mounts, variables, command. */}}
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
