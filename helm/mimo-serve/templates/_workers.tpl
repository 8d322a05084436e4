{{/*
Worker pods. With the operator, the chart writes a MiMoPool and the operator generates the Deployment
(operators/autoscaler/resources.py: container "worker", `mimo-serve worker --listen 0.0.0.0:31000
--metrics-port 9100 --engine E --model M [--no-mtp] [--device cuda]`, ports grpc/metrics, a gRPC
readiness probe, the GPU limit); the chart adds everything else through spec.template, which the
operator merges over its own (dicts merge, containers by name). Without the operator the chart renders
the same pod itself; tests/helm checks that both give the same pod.
*/}}

{{- define "mimo.workerGrpcPort" -}}31000{{- end -}}
{{- define "mimo.workerMetricsPort" -}}9100{{- end -}}

{{/* Flags the chart adds after the operator's: the SGLang interpreter, then workers.extraArgs. */}}
{{- define "mimo.workerExtraArgs" -}}
{{- $w := .Values.workers -}}
{{- $extra := list -}}
{{- if and (eq $w.engine "sglang") $w.sglangPython -}}
{{- $extra = list "--sglang-python" $w.sglangPython -}}
{{- end -}}
{{- toJson (concat $extra $w.extraArgs) -}}
{{- end -}}

{{/* The operator's worker arguments (resources.worker_args) followed by the chart's extra flags. */}}
{{- define "mimo.workerArgs" -}}
{{- $w := .Values.workers -}}
- worker
- --listen
- 0.0.0.0:{{ include "mimo.workerGrpcPort" . }}
- --metrics-port
- {{ include "mimo.workerMetricsPort" . | quote }}
- --engine
- {{ $w.engine }}
- --model
- {{ .Values.model.path | quote }}
{{- if not $w.mtp }}
- --no-mtp
{{- end }}
{{- if and (eq $w.engine "torch") (gt (int $w.gpusPerReplica) 0) }}
- --device
- cuda
{{- end }}
{{- range include "mimo.workerExtraArgs" . | fromJsonArray }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The worker container's resources: workers.resources plus the GPU limit (as the operator adds it). */}}
{{- define "mimo.workerResources" -}}
{{- $w := .Values.workers -}}
{{- $res := deepCopy $w.resources -}}
{{- if gt (int $w.gpusPerReplica) 0 -}}
{{- $limits := default (dict) $res.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int $w.gpusPerReplica) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* What the chart adds to the worker container (the operator's own fields are not repeated). */}}
{{- define "mimo.workerContainerExtras" -}}
{{- $w := .Values.workers -}}
{{- $port := include "mimo.workerGrpcPort" . -}}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  {{- include "mimo.serverEnv" . | nindent 2 }}
  - name: MIMO_WORKER_GRACE_S
    value: {{ sub (int $w.terminationGracePeriodSeconds) 15 | max 1 | quote }}
  - name: XDG_CACHE_HOME
    value: /tmp/cache
startupProbe:
  {{- include "mimo.grpcProbe" (dict "port" $port "probe" $w.probes.startup) | nindent 2 }}
readinessProbe:
  {{- include "mimo.grpcProbe" (dict "port" $port "probe" $w.probes.readiness) | nindent 2 }}
livenessProbe:
  {{- include "mimo.grpcProbe" (dict "port" $port "probe" $w.probes.liveness) | nindent 2 }}
securityContext:
  {{- $sc := deepCopy .Values.global.securityContext }}
  {{- $_ := set $sc "readOnlyRootFilesystem" $w.readOnlyRootFilesystem }}
  {{- toYaml $sc | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
  {{- if $w.shm.enabled }}
  - {name: dshm, mountPath: /dev/shm}
  {{- end }}
  {{- include "mimo.modelCacheMount" . | nindent 2 }}
{{- end -}}

{{/* What the chart adds to the worker pod spec. */}}
{{- define "mimo.workerPodExtras" -}}
{{- $w := .Values.workers -}}
serviceAccountName: {{ include "mimo.componentName" (dict "root" . "component" "worker") }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
securityContext:
  {{- include "mimo.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (include "mimo.downloadInit" (dict "root" . "patterns" list)) }}
initContainers:
  {{- . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 20Gi}
  {{- if $w.shm.enabled }}
  - name: dshm
    emptyDir: {medium: Memory, sizeLimit: {{ $w.shm.sizeLimit }}}
  {{- end }}
  {{- include "mimo.modelCacheVolume" . | nindent 2 }}
{{- end -}}

{{/* Extra pod labels and annotations. */}}
{{- define "mimo.workerPodMetadataExtras" -}}
labels:
  app.kubernetes.io/part-of: mimo-serve
  {{- with .Values.global.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with (merge (dict) .Values.workers.podAnnotations .Values.global.podAnnotations) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The PromQL of one autoscaling metric for the pool selector `sel`, as operators/autoscaler/promql.py writes it. */}}
{{- define "mimo.poolMetricQuery" -}}
{{- $m := .metric -}}
{{- if eq $m.type "WaitingRequests" -}}
sum(mimo_worker_waiting_requests{{ .sel }})
{{- else if eq $m.type "KVCacheUsage" -}}
avg(mimo_worker_kv_usage_ratio{{ .sel }})
{{- else if eq $m.type "TimeToFirstTokenP90" -}}
histogram_quantile(0.9, sum by (le) (rate(mimo_worker_time_to_first_token_seconds_bucket{{ .sel }}[{{ $m.window | default "1m" }}])))
{{- else -}}
{{ $m.query }}
{{- end -}}
{{- end -}}
