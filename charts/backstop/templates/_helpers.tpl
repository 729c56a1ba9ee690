{{/*
Names: a release called "backstop" names its objects as deploy/ does (backstop-controller, ...);
another release prefixes them with its own name, so two releases never share a cluster object.
*/}}
{{- define "backstop.fullname" -}}
{{- if contains "backstop" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-backstop" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "backstop.serviceAccountName" -}}
{{- include "backstop.fullname" . }}-controller
{{- end -}}

{{/* Selector labels: the same as deploy/'s, so an install can move between the two. */}}
{{- define "backstop.selectorLabels" -}}
app.kubernetes.io/name: backstop
app.kubernetes.io/component: controller
{{- end -}}

{{/* Labels of every object: deploy/'s plus Helm's own. */}}
{{- define "backstop.labels" -}}
app.kubernetes.io/name: backstop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "backstop.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The port of `listen` (default 0.0.0.0:8080). On the host network no container port is
declared (it would be a host port), so probes and the Service name it by number. */}}
{{- define "backstop.port" -}}
{{- .Values.listen | default "0.0.0.0:8080" | splitList ":" | last -}}
{{- end -}}

{{- define "backstop.portRef" -}}
{{- if .Values.hostNetwork -}}{{ include "backstop.port" . }}{{- else -}}http{{- end -}}
{{- end -}}
