{{- define "memfrag-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memfrag-agent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "memfrag-agent.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "memfrag-agent.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memfrag-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Where the release's namespaced objects go: namespaceOverride, else the release's. */}}
{{- define "memfrag-agent.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{/* A label value: `+` (semver build metadata, 0.1.0+abc) is not allowed in one; 63 at most. */}}
{{- define "memfrag-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Every object's labels: commonLabels, then the chart's own (the schema refuses those keys in
     commonLabels and podLabels). */}}
{{- define "memfrag-agent.labels" -}}
{{- with .Values.commonLabels }}{{ toYaml . }}{{ "\n" }}{{ end -}}
{{ include "memfrag-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "memfrag-agent.chart" . }}
{{- end -}}

{{- define "memfrag-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "memfrag-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The DaemonSet's pods only (the hook and test pods carry other components). */}}
{{- define "memfrag-agent.agentSelectorLabels" -}}
{{ include "memfrag-agent.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* registry/repository: global.imageRegistry, else image.registry, in front of the
     repository, unless the repository names a registry itself (its first part has a `.` or a
     `:`, or is localhost, as Docker reads a reference): that one is used as it is.
     Arguments: (list $ repository). */}}
{{- define "memfrag-agent.repository" -}}
{{- $root := index . 0 -}}
{{- $repo := index . 1 -}}
{{- $first := splitList "/" $repo | first -}}
{{- $named := and (contains "/" $repo) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $registry := default $root.Values.image.registry $root.Values.global.imageRegistry -}}
{{- if or $named (not $registry) -}}
{{- $repo -}}
{{- else -}}
{{- printf "%s/%s" $registry $repo -}}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.image" -}}
{{- $repo := include "memfrag-agent.repository" (list . .Values.image.repository) -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.testImage" -}}
{{- if .Values.tests.image.repository -}}
{{- $repo := include "memfrag-agent.repository" (list . .Values.tests.image.repository) -}}
{{- printf "%s:%s" $repo (default "latest" .Values.tests.image.tag) -}}
{{- else -}}
{{- include "memfrag-agent.image" . -}}
{{- end -}}
{{- end -}}

{{/* Every pod's imagePullSecrets: global.imagePullSecrets (names or {name: ...}), then
     imagePullSecrets, each name once. */}}
{{- define "memfrag-agent.imagePullSecrets" -}}
{{- $names := list -}}
{{- range concat .Values.global.imagePullSecrets .Values.imagePullSecrets -}}
{{- $names = append $names (kindIs "string" . | ternary . "") -}}
{{- if kindIs "map" . }}{{ $names = append $names .name }}{{ end -}}
{{- end -}}
{{- with without (uniq $names) "" -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.cleanupName" -}}
{{- printf "%s-cleanup" (include "memfrag-agent.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* The job label the alerts select, as prometheus-operator sets it: prometheusRule.job if
     given; for the PodMonitor the value of the pod label podMonitor.jobLabel, else
     <namespace>/<name> of the PodMonitor; for the ServiceMonitor the value of the Service label
     serviceMonitor.jobLabel, else the Service's name. */}}
{{- define "memfrag-agent.job" -}}
{{- $v := .Values -}}
{{- $labels := include "memfrag-agent.labels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/component" "agent" -}}
{{- if $v.prometheusRule.job -}}
{{- $v.prometheusRule.job -}}
{{- else if $v.podMonitor.enabled -}}
{{- if $v.podMonitor.jobLabel -}}
{{- $pod := merge (deepCopy $v.podLabels) $labels -}}
{{- required (printf "podMonitor.jobLabel %s is not a label of the agent's pods" $v.podMonitor.jobLabel) (get $pod $v.podMonitor.jobLabel) -}}
{{- else -}}
{{- printf "%s/%s" (default (include "memfrag-agent.namespace" .) $v.podMonitor.namespace) (include "memfrag-agent.fullname" .) -}}
{{- end -}}
{{- else if $v.serviceMonitor.jobLabel -}}
{{- required (printf "serviceMonitor.jobLabel %s is not a label of the Service" $v.serviceMonitor.jobLabel) (get $labels $v.serviceMonitor.jobLabel) -}}
{{- else -}}
{{- include "memfrag-agent.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* What both monitors scrape: the metrics port, with each series labelled by its node. */}}
{{- define "memfrag-agent.scrapeEndpoint" -}}
- port: metrics
  path: /metrics
  interval: {{ .interval }}
  scrapeTimeout: {{ .scrapeTimeout }}
  relabelings:
    # The agent's metrics carry no node label: every series is about the node it runs on.
    - sourceLabels: [__meta_kubernetes_pod_node_name]
      targetLabel: node
      action: replace
    {{- with .relabelings }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .metricRelabelings }}
  metricRelabelings:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Where the agent's taint is tolerated: its own pods and the cleanup hook's. */}}
{{- define "memfrag-agent.ownTaintToleration" -}}
- key: {{ .Values.config.reporting.taint_key | quote }}
  operator: Exists
{{- end -}}

{{/* The ValidatingAdmissionPolicy needs the API (v1: Kubernetes 1.30) and the node-name claim
     in pod-bound tokens (ServiceAccountTokenPodNodeInfo, locked on since 1.32). */}}
{{- define "memfrag-agent.admissionPolicyEnabled" -}}
{{- if and .Values.admissionPolicy.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.32.0-0" .Capabilities.KubeVersion.Version) -}}
true
{{- end -}}
{{- end -}}

{{/* The config keys the agent applies only when it starts (agent/daemon.py RESTART_KEYS). */}}
{{- define "memfrag-agent.restartConfig" -}}
{{- $s := .Values.config.sources -}}
{{- $r := .Values.config.reporting -}}
{{- printf "kmsg_enabled=%v kmsg_path=%v tracing_enabled=%v metrics_address=%v metrics_port=%v" $s.kmsg_enabled $s.kmsg_path (default false $s.tracing_enabled) $r.metrics_address $r.metrics_port -}}
{{- end -}}
