{{/* Names and labels shared by every template. */}}
{{- define "tuneops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tuneops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tuneops.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tuneops.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tuneops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tuneops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tuneops
{{- end -}}

{{- define "tuneops.operatorSelector" -}}
app.kubernetes.io/name: {{ include "tuneops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tuneops.mlflowSelector" -}}
app.kubernetes.io/name: {{ include "tuneops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mlflow
{{- end -}}

{{- define "tuneops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "tuneops.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest; tag defaults to the chart's appVersion. */}}
{{- define "tuneops.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}
{{- end -}}

{{- define "tuneops.mlflowUri" -}}
{{- if .Values.defaults.mlflowUri -}}
{{- .Values.defaults.mlflowUri -}}
{{- else if .Values.mlflow.enabled -}}
{{- printf "http://%s-mlflow.%s.svc:%d" (include "tuneops.fullname" .) .Release.Namespace (int .Values.mlflow.port) -}}
{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules: files/operator-clusterrole.yaml is `tuneops operator rbac` output. */}}
{{- define "tuneops.rules" -}}
{{- (.Files.Get "files/operator-clusterrole.yaml" | fromYaml).rules | toYaml -}}
{{- end -}}
