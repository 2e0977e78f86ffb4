{{/* Names and labels. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferry.fullname" -}}
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

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The port of a host:port listen address. */}}
{{- define "ferry.port" -}}
{{- $port := regexFind "[0-9]+$" . }}
{{- if not $port }}
{{- fail (printf "%q is not a host:port address" .) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* etcd endpoints: the values', or the evaluation etcd's. */}}
{{- define "ferry.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- toJson .Values.etcd.endpoints }}
{{- else if .Values.evaluationEtcd.enabled }}
{{- toJson (list (printf "http://%s-etcd:2379" (include "ferry.fullname" .))) }}
{{- else }}
{{- fail "etcd.endpoints is empty: list your etcd's client endpoints, or set evaluationEtcd.enabled=true for a single-node evaluation etcd" }}
{{- end }}
{{- end }}

{{/* The [etcd] section both binaries share, with the mounted files' paths. */}}
{{- define "ferry.etcdConfig" -}}
{{- $etcd := dict "endpoints" (include "ferry.etcdEndpoints" . | fromJsonArray) "cluster" .Values.etcd.cluster }}
{{- if .Values.etcd.tls.existingSecret }}
{{- $_ := set $etcd "ca" "/etc/ferry/etcd-tls/ca.crt" }}
{{- if .Values.etcd.tls.clientCertificate }}
{{- $_ := set $etcd "cert" "/etc/ferry/etcd-tls/tls.crt" }}
{{- $_ := set $etcd "key" "/etc/ferry/etcd-tls/tls.key" }}
{{- end }}
{{- else if .Values.etcd.tls.clientCertificate }}
{{- fail "etcd.tls.clientCertificate needs etcd.tls.existingSecret (a Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if .Values.etcd.auth.user }}
{{- if not .Values.etcd.auth.existingSecret }}
{{- fail "etcd.auth.user needs etcd.auth.existingSecret, a Secret holding the user's password" }}
{{- end }}
{{- $_ := set $etcd "user" .Values.etcd.auth.user }}
{{- $_ := set $etcd "password_file" "/etc/ferry/etcd-password/password" }}
{{- end }}
{{- toJson $etcd }}
{{- end }}

{{/* Volumes and mounts of etcd's TLS material and password, for both binaries. */}}
{{- define "ferry.etcdVolumes" -}}
{{- if .Values.etcd.tls.existingSecret }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.tls.existingSecret }}
{{- end }}
{{- if .Values.etcd.auth.user }}
- name: etcd-password
  secret:
    secretName: {{ .Values.etcd.auth.existingSecret }}
    items:
      - key: {{ .Values.etcd.auth.passwordKey }}
        path: password
{{- end }}
{{- end }}

{{- define "ferry.etcdVolumeMounts" -}}
{{- if .Values.etcd.tls.existingSecret }}
- name: etcd-tls
  mountPath: /etc/ferry/etcd-tls
  readOnly: true
{{- end }}
{{- if .Values.etcd.auth.user }}
- name: etcd-password
  mountPath: /etc/ferry/etcd-password
  readOnly: true
{{- end }}
{{- end }}

{{/* The database Secrets' keys as the variables specs name in url_env. */}}
{{- define "ferry.databaseEnv" -}}
{{- range .Values.databaseEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretKeyRef.name }}
      key: {{ .secretKeyRef.key }}
{{- end }}
{{- end }}

{{/* coordinator.toml as a dict. */}}
{{- define "ferry.coordinatorConfig" -}}
{{- $c := .Values.coordinator }}
{{- $config := deepCopy $c.config }}
{{- $_ := set $config "etcd" (include "ferry.etcdConfig" . | fromJson) }}
{{- $server := default dict $config.server }}
{{- if $c.tls.existingSecret }}
{{- $_ := set $server "tls_cert" "/etc/ferry/tls/tls.crt" }}
{{- $_ := set $server "tls_key" "/etc/ferry/tls/tls.key" }}
{{- if $c.tls.clientCA }}
{{- $_ := set $server "client_ca" "/etc/ferry/tls/ca.crt" }}
{{- end }}
{{- if not $server.health_listen }}
{{- fail "coordinator.config.server.health_listen is needed with coordinator.tls: Kubernetes' grpc probes speak no TLS, so they use that plaintext health-only port" }}
{{- end }}
{{- else if $c.tls.clientCA }}
{{- fail "coordinator.tls.clientCA needs coordinator.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if $c.tokens.existingSecret }}
{{- $_ := set $server "tokens_file" "/etc/ferry/tokens/tokens" }}
{{- end }}
{{- if not (or $c.tokens.existingSecret $c.tls.clientCA $server.insecure) }}
{{- fail "the coordinators' Control API would serve without authentication: set coordinator.tokens.existingSecret (bearer tokens), or coordinator.tls.existingSecret with coordinator.tls.clientCA=true (mutual TLS), or, if a NetworkPolicy already guards it, coordinator.config.server.insecure=true" }}
{{- end }}
{{- if not $server.listen }}
{{- fail "coordinator.config.server.listen is empty: the Control API's host:port, e.g. 0.0.0.0:7979" }}
{{- end }}
{{- $_ := set $config "server" $server }}
{{- toJson $config }}
{{- end }}

{{/* worker.toml as a dict. */}}
{{- define "ferry.workerConfig" -}}
{{- $config := deepCopy .Values.worker.config }}
{{- $_ := set $config "etcd" (include "ferry.etcdConfig" . | fromJson) }}
{{- if not (and $config.health $config.health.listen) }}
{{- fail "worker.config.health.listen is empty: the probes need the worker's gRPC health port, e.g. 0.0.0.0:7990" }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/* The coordinator's health port: health_listen's, else listen's. */}}
{{- define "ferry.coordinatorHealthPort" -}}
{{- $server := .Values.coordinator.config.server }}
{{- include "ferry.port" (default $server.listen $server.health_listen) }}
{{- end }}

{{/* drain_timeout ("90s", "5m", "1h") in seconds. */}}
{{- define "ferry.drainTimeoutSeconds" -}}
{{- $text := toString .Values.worker.config.drain_timeout }}
{{- if not (regexMatch "^[0-9]+(s|m|h)$" $text) }}
{{- fail (printf "worker.config.drain_timeout %q: write a whole number of s, m or h (\"90s\", \"5m\"), so terminationGracePeriodSeconds can be computed from it" $text) }}
{{- end }}
{{- $number := regexFind "^[0-9]+" $text | atoi }}
{{- $unit := regexFind "[smh]$" $text }}
{{- mul $number (get (dict "s" 1 "m" 60 "h" 3600) $unit) }}
{{- end }}

{{/*
A dict as a TOML document: scalars and arrays first, then one [table] per nested map.
Helm's toToml writes every number of a values file as a float (100000.0), which the
binaries refuse for integer keys, so numbers equal to an integer are written as integers.
*/}}
{{- define "ferry.toml" -}}
{{- $table := .table }}
{{- $prefix := .prefix }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{ $key }} = {{ include "ferry.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if kindIs "map" $value }}
{{- $name := ternary $key (printf "%s.%s" $prefix $key) (eq $prefix "") }}

[{{ $name }}]
{{- include "ferry.toml" (dict "table" $value "prefix" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferry.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $index, $item := . }}{{ if $index }}, {{ end }}{{ include "ferry.tomlValue" $item }}{{ end }}]
{{- else if kindIs "map" . }}{ {{- range $index, $key := keys . | sortAlpha }}{{ if $index }},{{ end }} {{ $key }} = {{ include "ferry.tomlValue" (index $ $key) }}{{ end }} }
{{- else }}{{ . }}
{{- end }}
{{- end }}
