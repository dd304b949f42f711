{{/* The checks of the run-time values and the workflow's graph (called once per render, from job.yaml). */}}
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
