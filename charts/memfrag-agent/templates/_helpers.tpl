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

{{- define "memfrag-agent.labels" -}}
{{ include "memfrag-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
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

{{- define "memfrag-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.testImage" -}}
{{- if .Values.tests.image.repository -}}
{{- printf "%s:%s" .Values.tests.image.repository (default "latest" .Values.tests.image.tag) -}}
{{- else -}}
{{- include "memfrag-agent.image" . -}}
{{- end -}}
{{- end -}}

{{- define "memfrag-agent.cleanupName" -}}
{{- printf "%s-cleanup" (include "memfrag-agent.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* The Prometheus job label: the ServiceMonitor scrapes through the Service of this name. */}}
{{- define "memfrag-agent.job" -}}
{{- include "memfrag-agent.fullname" . -}}
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
{{- printf "kmsg_enabled=%v kmsg_path=%v metrics_address=%v metrics_port=%v" $s.kmsg_enabled $s.kmsg_path $r.metrics_address $r.metrics_port -}}
{{- end -}}
