{{/* Names ---------------------------------------------------------------------------------------- */}}

{{- define "mimo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mimo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one part: <fullname>-<component>. */}}
{{- define "mimo.componentName" -}}
{{- printf "%s-%s" (include "mimo.fullname" .root) .component -}}
{{- end -}}

{{/* The worker pool's name: the MiMoPool, its Deployment and Service, and the `pool` metric label. */}}
{{- define "mimo.poolName" -}}
{{- default (printf "%s-workers" (include "mimo.fullname" .)) .Values.workers.poolName | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------- */}}

{{- define "mimo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mimo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mimo-serve
{{- end -}}

{{/* Selector labels of one part; call with (dict "root" $ "component" "router"). */}}
{{- define "mimo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mimo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mimo.componentLabels" -}}
{{ include "mimo.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Worker pod labels: the same as the operator's (operators/autoscaler/resources.py pool_labels), so the
router's selector, the ServiceMonitor and the PodDisruptionBudget find workers with or without it.
*/}}
{{- define "mimo.poolSelectorLabels" -}}
serve.mimo.dev/pool: {{ include "mimo.poolName" . }}
{{- end -}}

{{- define "mimo.poolLabels" -}}
app.kubernetes.io/name: mimo-worker
app.kubernetes.io/instance: {{ include "mimo.poolName" . }}
app.kubernetes.io/component: worker
{{ include "mimo.poolSelectorLabels" . }}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------------- */}}

{{- define "mimo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The worker image: workers.image, else <image.repository>-sglang for SGLang, else the main image. */}}
{{- define "mimo.workerImage" -}}
{{- $w := .Values.workers -}}
{{- $repo := $w.image.repository -}}
{{- if not $repo -}}
{{- $repo = ternary (printf "%s-sglang" .Values.image.repository) .Values.image.repository (eq $w.engine "sglang") -}}
{{- end -}}
{{- printf "%s:%s" $repo (default (default .Chart.AppVersion .Values.image.tag) $w.image.tag) -}}
{{- end -}}

{{/* Pod and container pieces ---------------------------------------------------------------------- */}}

{{- define "mimo.podSecurityContext" -}}
{{- toYaml .Values.global.podSecurityContext -}}
{{- end -}}

{{- define "mimo.securityContext" -}}
{{- toYaml .Values.global.securityContext -}}
{{- end -}}

{{/* A gRPC health probe; call with (dict "port" 50051 "probe" .Values.workers.probes.startup). */}}
{{- define "mimo.grpcProbe" -}}
grpc:
  port: {{ .port }}
{{- range $key, $value := .probe }}
{{ $key }}: {{ $value }}
{{- end }}
{{- end -}}

{{/* Environment every server reads (services/common/config.py env fallbacks). */}}
{{- define "mimo.serverEnv" -}}
- name: MIMO_LOG_LEVEL
  value: {{ .Values.global.logLevel | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HOME
  value: /tmp
{{- end -}}

{{/* The model cache volume (model.cache.type), named model-cache; nothing for type none. */}}
{{- define "mimo.modelCacheVolume" -}}
{{- $c := .Values.model.cache -}}
{{- if eq $c.type "pvc" }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-model-cache" (include "mimo.fullname" .)) $c.existingClaim }}
{{- else if eq $c.type "hostPath" }}
- name: model-cache
  hostPath:
    path: {{ $c.hostPath }}
    type: DirectoryOrCreate
{{- else if eq $c.type "emptyDir" }}
- name: model-cache
  emptyDir:
    sizeLimit: {{ $c.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "mimo.modelCacheMount" -}}
{{- if ne .Values.model.cache.type "none" }}
- name: model-cache
  mountPath: {{ .Values.model.cache.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The init container that downloads the model into model.path; call with (dict "root" $ "patterns" list).
An empty pattern list downloads everything; the tokenizer asks only for tokenizer files.
*/}}
{{- define "mimo.downloadInit" -}}
{{- $root := .root -}}
{{- $d := $root.Values.model.download -}}
{{- if and $d.enabled (ne $root.Values.model.cache.type "none") }}
- name: download-model
  image: {{ include "mimo.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: [python, -c]
  args:
    - |
      import sys
      from huggingface_hub import snapshot_download
      patterns = sys.argv[4:] or None
      snapshot_download(repo_id=sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3], allow_patterns=patterns)
    - {{ $d.repo | quote }}
    - {{ $d.revision | quote }}
    - {{ $root.Values.model.path | quote }}
  {{- range .patterns }}
    - {{ . | quote }}
  {{- end }}
  env:
    - name: HOME
      value: /tmp
    - name: HF_HUB_DISABLE_TELEMETRY
      value: "1"
  {{- if $d.tokenSecret }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $d.tokenSecret }}
          key: HF_TOKEN
  {{- end }}
  securityContext:
    {{- include "mimo.securityContext" $root | nindent 4 }}
  resources:
    requests: {cpu: 500m, memory: 512Mi}
    limits: {memory: 2Gi}
  volumeMounts:
    - name: model-cache
      mountPath: {{ $root.Values.model.cache.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end -}}

{{/* Monitoring switches: "auto" follows the cluster's monitoring.coreos.com/v1 API. */}}
{{- define "mimo.serviceMonitorsEnabled" -}}
{{- $v := .Values.monitoring.serviceMonitors.enabled -}}
{{- if or (eq (toString $v) "true") (and (eq (toString $v) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "mimo.prometheusRuleEnabled" -}}
{{- $v := .Values.monitoring.prometheusRule.enabled -}}
{{- if or (eq (toString $v) "true") (and (eq (toString $v) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches: the release namespace and operator.watchNamespaces. */}}
{{- define "mimo.operatorNamespaces" -}}
{{- $all := prepend .Values.operator.watchNamespaces .Release.Namespace | uniq -}}
{{- toJson $all -}}
{{- end -}}
