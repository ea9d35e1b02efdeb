{{/* Names, labels and the pieces every Souq workload shares. */}}

{{- define "souq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "souq.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "souq.componentName" -}}
{{- printf "%s-%s" (include "souq.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "souq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "souq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: souq
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "edge"). */}}
{{- define "souq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "souq.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "souq.componentLabels" -}}
{{ include "souq.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "souq.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "souq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "souq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The edge's public URL: publicUrl, else the first Ingress host, else the in-cluster Service. */}}
{{- define "souq.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl }}
{{- else if and .Values.edge.ingress.enabled .Values.edge.ingress.hosts }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.edge.ingress.tls) 0)) (first .Values.edge.ingress.hosts).host }}
{{- else }}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" .Values.edge.tls.enabled) (include "souq.componentName" (dict "root" . "component" "edge")) .Release.Namespace (int .Values.edge.service.port) }}
{{- end }}
{{- end }}

{{/* The control plane's gRPC URL, as agents and edges dial it. */}}
{{- define "souq.controlPlaneUrl" -}}
{{- printf "%s://%s:%d" (ternary "https" "http" .Values.internalTls.enabled) (include "souq.componentName" (dict "root" . "component" "control-plane")) (int .Values.controlPlane.port) }}
{{- end }}

{{/*
The Secret and key a setting is read from: its existingSecret, or the chart's Secret.
Call with (dict "root" $ "item" .Values.secrets.redis).
*/}}
{{- define "souq.secretRef" -}}
name: {{ default (include "souq.fullname" .root) .item.existingSecret }}
key: {{ .item.key }}
{{- end }}

{{/* One env var from a secretKeyRef; call with (dict "root" $ "name" "SOUQ_X" "item" $item). */}}
{{- define "souq.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      {{- include "souq.secretRef" (dict "root" .root "item" .item) | nindent 6 }}
{{- end }}

{{/* Whether the chart's own Secret is needed: anything not named by an existingSecret. */}}
{{- define "souq.ownSecretNeeded" -}}
{{- $s := .Values.secrets }}
{{- if or (not $s.database.existingSecret) (not $s.redis.existingSecret) (and $s.smtp.url (not $s.smtp.existingSecret)) (not $s.joinToken.existingSecret) (not $s.signingKey.existingSecret) (not $s.adminToken.existingSecret) }}true{{- end }}
{{- end }}

{{/* Whether an SMTP server is given; without one, mail goes to .eml files in mail.dir. */}}
{{- define "souq.smtpGiven" -}}
{{- if or .Values.secrets.smtp.url .Values.secrets.smtp.existingSecret }}true{{- end }}
{{- end }}

{{/* The internal TLS Secret of a role (control-plane, agent, edge). */}}
{{- define "souq.tlsSecretName" -}}
{{- $existing := .root.Values.internalTls.existingSecrets }}
{{- $given := get $existing (get (dict "control-plane" "controlPlane" "agent" "agent" "edge" "edge") .role) }}
{{- default (printf "%s-tls-%s" (include "souq.fullname" .root) .role) $given }}
{{- end }}

{{/* The --tls-* or --insecure-grpc env of a role's container. */}}
{{- define "souq.grpcTlsEnv" -}}
{{- if .Values.internalTls.enabled }}
- name: SOUQ_TLS_CERT
  value: /etc/souq/grpc-tls/tls.crt
- name: SOUQ_TLS_KEY
  value: /etc/souq/grpc-tls/tls.key
- name: SOUQ_TLS_CA
  value: /etc/souq/grpc-tls/ca.crt
{{- else }}
- name: SOUQ_INSECURE_GRPC
  value: "true"
{{- end }}
{{- end }}

{{- define "souq.grpcTlsMount" -}}
{{- if .Values.internalTls.enabled }}
- name: grpc-tls
  mountPath: /etc/souq/grpc-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The TLS volume of a role; call with (dict "root" $ "role" "agent"). */}}
{{- define "souq.grpcTlsVolume" -}}
{{- if .root.Values.internalTls.enabled }}
- name: grpc-tls
  secret:
    secretName: {{ include "souq.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end }}

{{/* Env common to every long-running role. */}}
{{- define "souq.commonEnv" -}}
- name: SOUQ_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/*
Telemetry env of a long-running role: the plain-HTTP metrics listener (GET /metrics,
GET /healthz and the gRPC health service) on metrics.port, and OTLP trace export.
*/}}
{{- define "souq.telemetryEnv" -}}
- name: SOUQ_METRICS_ADDR
  value: "0.0.0.0:{{ .Values.metrics.port }}"
{{- with .Values.telemetry.otlpEndpoint }}
- name: SOUQ_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: SOUQ_TRACE_SAMPLE_RATIO
  value: {{ .Values.telemetry.traceSampleRatio | toString | quote }}
{{- end }}

{{/* The metrics container port of a long-running role. */}}
{{- define "souq.metricsContainerPort" -}}
- name: metrics
  containerPort: {{ .Values.metrics.port }}
  protocol: TCP
{{- end }}

{{/* The metrics port of a role's Service (plain HTTP, also when the edge serves HTTPS). */}}
{{- define "souq.metricsServicePort" -}}
- name: metrics
  port: {{ .Values.metrics.port }}
  targetPort: metrics
  protocol: TCP
  appProtocol: http
{{- end }}

{{/* The NetworkPolicy ingress rule of the metrics port; call with metrics.allowFrom. */}}
{{- define "souq.metricsIngress" -}}
- ports:
    - {port: metrics, protocol: TCP}
  {{- with . }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The probes of a role whose main port is gRPC behind mutual TLS: the kubelet's gRPC probe
calls grpc.health.v1.Health on the plain-text metrics port instead. Call with
(dict "root" $ "probes" $c.probes).
*/}}
{{- define "souq.grpcHealthProbes" -}}
startupProbe:
  grpc: {port: {{ .root.Values.metrics.port }}}
  {{- include "souq.probeTimings" .probes.startup | trim | nindent 2 }}
livenessProbe:
  grpc: {port: {{ .root.Values.metrics.port }}}
  {{- include "souq.probeTimings" .probes.liveness | trim | nindent 2 }}
readinessProbe:
  grpc: {port: {{ .root.Values.metrics.port }}}
  {{- include "souq.probeTimings" .probes.readiness | trim | nindent 2 }}
{{- end }}

{{/* A probe's timings from values; the handler comes from the template. */}}
{{- define "souq.probeTimings" -}}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }}: {{ $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* Optional numeric settings as env: only those set. Call with a list of [name, value]. */}}
{{- define "souq.optionalEnv" -}}
{{- range . }}
{{- if not (kindIs "invalid" (index . 1)) }}
- name: {{ index . 0 }}
  value: {{ index . 1 | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Refuses values the schema cannot express across keys. */}}
{{- define "souq.validate" -}}
{{- $t := .Values.internalTls.existingSecrets }}
{{- $n := 0 }}
{{- range $k := list "controlPlane" "agent" "edge" }}{{ if get $t $k }}{{ $n = add1 $n }}{{ end }}{{ end }}
{{- if and (gt $n 0) (lt $n 3) }}
{{- fail "internalTls.existingSecrets: name all three Secrets (controlPlane, agent, edge) or none" }}
{{- end }}
{{- range $k := list "database" "redis" "smtp" }}
{{- $i := get $.Values.secrets $k }}
{{- if and $i.url $i.existingSecret }}
{{- fail (printf "secrets.%s: set url or existingSecret, not both" $k) }}
{{- end }}
{{- if and (not (or $i.url $i.existingSecret)) (or (ne $k "smtp") (not $.Values.mail.dir)) }}
{{- fail (printf "secrets.%s: set url or existingSecret (PostgreSQL, Redis and SMTP are external; without SMTP, set mail.dir)" $k) }}
{{- end }}
{{- end }}
{{- if and .Values.mail.dir (include "souq.smtpGiven" .) }}
{{- fail "mail.dir: only without SMTP (secrets.smtp with neither url nor existingSecret); mail goes to one or the other" }}
{{- end }}
{{- range $k := list "controlPlane" "edge" }}
{{- $p := (get $.Values $k).pdb }}
{{- if and (not (kindIs "invalid" $p.minAvailable)) (not (kindIs "invalid" $p.maxUnavailable)) }}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable, not both (null the other)" $k) }}
{{- end }}
{{- end }}
{{- range $k := list "controlPlane" "edge" "agent" }}
{{- if eq (int (get $.Values $k).port) (int $.Values.metrics.port) }}
{{- fail (printf "metrics.port: %d is also %s.port; give the metrics listener a port of its own" (int $.Values.metrics.port) $k) }}
{{- end }}
{{- end }}
{{- if and .Values.edge.tls.enabled (not .Values.edge.tls.existingSecret) }}
{{- fail "edge.tls.existingSecret: name the kubernetes.io/tls Secret the edge serves HTTPS with" }}
{{- end }}
{{- end }}
