{{- define "infermodes.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infermodes.labels" -}}
app.kubernetes.io/name: infermodes
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "infermodes.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "infermodes.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "infermodes.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Who may connect to endpoint pods (networkPolicy.enabled): the gateway's pods to model
servers; the operator's (it reads their load, in-flight counts and progress) and the listed
scrapers to every endpoint pod. NetworkPolicy peers, as JSON. */}}
{{- define "infermodes.networkPolicy.servingFrom" -}}
{{- $peers := list -}}
{{- if .Values.gateway.enabled -}}
{{- $namespace := dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace) -}}
{{- $pods := dict "matchLabels" (include "infermodes.gateway.selectorLabels" . | fromYaml) -}}
{{- $peers = append $peers (dict "namespaceSelector" $namespace "podSelector" $pods) -}}
{{- end -}}
{{- toJson (concat $peers .Values.networkPolicy.servingFrom) -}}
{{- end -}}

{{- define "infermodes.networkPolicy.metricsFrom" -}}
{{- $namespace := dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace) -}}
{{- $pods := dict "matchLabels" (dict "app.kubernetes.io/name" "infermodes" "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "operator") -}}
{{- toJson (prepend .Values.networkPolicy.metricsFrom (dict "namespaceSelector" $namespace "podSelector" $pods)) -}}
{{- end -}}
