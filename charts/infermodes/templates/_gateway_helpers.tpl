{{- define "infermodes.gateway.fullname" -}}
{{- printf "%s-gateway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infermodes.gateway.selectorLabels" -}}
app.kubernetes.io/name: infermodes
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "infermodes.gateway.labels" -}}
{{ include "infermodes.gateway.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "infermodes.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (include "infermodes.gateway.fullname" .) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the gateway serves: the configured list, or the release's own; and the
platform API's, whose endpoints it must serve too. */}}
{{- define "infermodes.gateway.namespaces" -}}
{{- $chosen := .Values.gateway.namespaces | default (list .Release.Namespace) -}}
{{- if has "*" $chosen -}}
{{- toJson $chosen -}}
{{- else -}}
{{- toJson (append $chosen (include "infermodes.gateway.platformNamespace" .) | uniq) -}}
{{- end -}}
{{- end -}}

{{/* Where the platform API keeps what it creates: the configured namespace, or the release's. */}}
{{- define "infermodes.gateway.platformNamespace" -}}
{{- default .Release.Namespace .Values.gateway.platform.namespace -}}
{{- end -}}
