{{/*
Shared names, labels and pod fragments. Every template includes these instead of repeating them.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "lkps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (63 characters at most: a DNS label). */}}
{{- define "lkps.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "lkps.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image tag actually deployed: image.tag, or the chart's appVersion. */}}
{{- define "lkps.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* Full image reference; a digest wins over the tag. */}}
{{- define "lkps.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "lkps.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Recommended labels for every resource. */}}
{{- define "lkps.labels" -}}
helm.sh/chart: {{ include "lkps.chart" . | quote }}
{{ include "lkps.selectorLabels" . }}
app.kubernetes.io/version: {{ include "lkps.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- end }}

{{/* Selector labels: name and instance only, because selectors are immutable. */}}
{{- define "lkps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lkps.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
Labels of the one-shot command pods (migration, retention). Their name label differs from the server's,
so the Service, HPA, PDB and NetworkPolicy selectors never pick them up. Call with (list $ "component").
*/}}
{{- define "lkps.commandPodLabels" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
helm.sh/chart: {{ include "lkps.chart" $root | quote }}
app.kubernetes.io/name: {{ printf "%s-%s" (include "lkps.name" $root) $component | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/instance: {{ $root.Release.Name | quote }}
app.kubernetes.io/version: {{ include "lkps.imageTag" $root | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service | quote }}
app.kubernetes.io/component: {{ $component | quote }}
app.kubernetes.io/part-of: {{ include "lkps.name" $root | quote }}
{{- end }}

{{/* ServiceAccount of the server pods. */}}
{{- define "lkps.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lkps.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the referenced Secret (never created by the chart). */}}
{{- define "lkps.secretName" -}}
{{- default (include "lkps.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Path where the AKS workload-identity webhook projects the federated token. */}}
{{- define "lkps.federatedTokenFile" -}}
/var/run/secrets/azure/tokens/azure-identity-token
{{- end }}

{{/* Settings lkps reads as secrets (config/settings.py `secret(...)`): only ever from a Secret. */}}
{{- define "lkps.secretSettingNames" -}}
{{- list "LKPS_LIVEKIT_API_KEY" "LKPS_LIVEKIT_API_SECRET" "LKPS_DATABASE_URL" "LKPS_ENTRA_CLIENT_SECRET" "LKPS_ENTRA_CLIENT_CERTIFICATE_PASSWORD" | toJson }}
{{- end }}

{{/*
Refuse values that would leak a secret or start a broken pod. Included by the ConfigMap, which always
renders, so every install, upgrade and `helm template` runs these checks.
*/}}
{{- define "lkps.validate" -}}
{{- $secretNames := include "lkps.secretSettingNames" . | fromJsonArray }}
{{- range $key, $value := .Values.config }}
{{- $text := toString $value }}
{{- if has $key $secretNames }}
{{- fail (printf "config.%s is a secret: store it in the Secret and map it under secrets.keys.%s, never in values" $key $key) }}
{{- end }}
{{- if and (not (hasSuffix "_FILE" $key)) (regexMatch "(SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL|CONNECTION_STRING)" $key) }}
{{- fail (printf "config.%s looks like a secret setting: reference it from a Secret instead of values" $key) }}
{{- end }}
{{- /* Any user info in any URL of the value (user:password@, :password@, token@), and credential query parameters. */}}
{{- if regexMatch "://[^/?#\\s]*@" $text }}
{{- fail (printf "config.%s contains a URL with credentials: reference it from a Secret instead of values" $key) }}
{{- end }}
{{- if regexMatch "(?i)[?&;](password|passwd|pwd|pass|secret|client_secret|token|access_token|api[-_]?key|sig|signature|credentials?|auth)=" $text }}
{{- fail (printf "config.%s contains a URL with credentials in its query: reference it from a Secret instead of values" $key) }}
{{- end }}
{{- if get $.Values.secrets.keys $key }}
{{- fail (printf "config.%s is also mapped from the Secret under secrets.keys.%s: keep one" $key $key) }}
{{- end }}
{{- if contains "-----BEGIN" $text }}
{{- fail (printf "config.%s contains PEM material: mount it from a Secret instead of values" $key) }}
{{- end }}
{{- $direct := trimSuffix "_FILE" $key }}
{{- if and (hasSuffix "_FILE" $key) (get $.Values.secrets.keys $direct) }}
{{- fail (printf "config.%s conflicts with secrets.keys.%s: lkps refuses both; keep one" $key $direct) }}
{{- end }}
{{- end }}
{{- include "lkps.validateIngress" . }}
{{- $publicUrl := get (include "lkps.configData" . | fromYaml) "LKPS_PUBLIC_URL" }}
{{- if not $publicUrl }}
{{- fail "config.LKPS_PUBLIC_URL is required (the https:// URL LiveKit Agents workers reach lkps at), or an ingress host to derive it from: without it lkps hands out no worker credentials" }}
{{- else if not (hasPrefix "https://" $publicUrl) }}
{{- fail (printf "config.LKPS_PUBLIC_URL %q must be an https:// URL: workers send their credentials to it" $publicUrl) }}
{{- end }}
{{- if .Values.workloadIdentity.enabled }}
{{- $_ := required "workloadIdentity.clientId is required when workloadIdentity.enabled is true" .Values.workloadIdentity.clientId }}
{{- range $key := list "LKPS_ENTRA_CLIENT_ID" "LKPS_ENTRA_FEDERATED_TOKEN_FILE" "LKPS_ENTRA_CLIENT_CERTIFICATE" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s must not be set with workload identity: the chart derives the Graph credential" $key) }}
{{- end }}
{{- end }}
{{- if .Values.secrets.keys.LKPS_ENTRA_CLIENT_SECRET }}
{{- fail "secrets.keys.LKPS_ENTRA_CLIENT_SECRET must be empty with workload identity: lkps accepts one Graph credential" }}
{{- end }}
{{- end }}
{{- range $name := list "LKPS_LIVEKIT_API_KEY" "LKPS_LIVEKIT_API_SECRET" "LKPS_DATABASE_URL" }}
{{- $_ := required (printf "secrets.keys.%s must name a key of the existing Secret" $name) (get $.Values.secrets.keys $name) }}
{{- end }}
{{- if eq (include "lkps.imageTag" .) "latest" }}
{{- fail "the image tag must be pinned: \"latest\" is not allowed" }}
{{- end }}
{{- $drain := add (int .Values.preStopSleepSeconds) 30 }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + 30 s of request draining (%d)" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- end }}

{{/*
The admin API never goes out through the public Ingress: refuse any public path that would route
/api/admin (a string prefix of it such as /, /api or /api/, a path under it, or a regex), and an admin
Ingress that shares a public host on the same controller.
*/}}
{{- define "lkps.validateIngress" -}}
{{- if .Values.ingress.enabled }}
{{- range $rule := .Values.ingress.hosts }}
{{- range $entry := $rule.paths }}
{{- $path := $entry.path }}
{{- if and (hasPrefix "/api/health" $path) (ne $path "/api/health/live") }}
{{- fail (printf "ingress.hosts[%s].paths: %q would publish the readiness checks (/api/health, /api/health/ready) on the public Ingress; list /api/health/live (pathType Exact) instead" $rule.host $path) }}
{{- end }}
{{- if or (hasPrefix $path "/api/admin") (hasPrefix "/api/admin" $path) (regexMatch "[][*()|^$+?\\\\]" $path) }}
{{- fail (printf "ingress.hosts[%s].paths: %q would publish the admin API (/api/admin) on the public Ingress; list the public prefixes (/api/session, /api/livekit, /api/agent, /api/health/live) and use adminIngress for the admin API" $rule.host $path) }}
{{- end }}
{{- if and $.Values.adminIngress.enabled (eq $rule.host $.Values.adminIngress.host) (eq $.Values.ingress.className $.Values.adminIngress.className) }}
{{- fail (printf "adminIngress.host %q is a public host on the same ingress class: give the admin API an internal class or host" $rule.host) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Non-secret settings as a YAML map: `config` plus what the chart derives. Sorted, so the checksum
annotation only changes when a value does.
*/}}
{{- define "lkps.configData" -}}
{{- $data := dict }}
{{- range $key, $value := .Values.config }}
{{- if kindIs "float64" $value }}
{{- /* Values arrive as float64: print whole numbers as integers, never as 1e+06. */}}
{{- $whole := int64 $value }}
{{- $_ := set $data $key (ternary (toString $whole) (toString $value) (eq $value (float64 $whole))) }}
{{- else if not (kindIs "invalid" $value) }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- end }}
{{- $publicHost := include "lkps.publicHost" . }}
{{- if and $publicHost (not (get $data "LKPS_PUBLIC_URL")) }}
{{- /* The worker URL registrations hand out (lkps answers none without it): where workers reach lkps. */}}
{{- $_ := set $data "LKPS_PUBLIC_URL" (printf "https://%s" $publicHost) }}
{{- end }}
{{- if .Values.workloadIdentity.enabled }}
{{- $_ := set $data "LKPS_ENTRA_CLIENT_ID" .Values.workloadIdentity.clientId }}
{{- $_ := set $data "LKPS_ENTRA_FEDERATED_TOKEN_FILE" (include "lkps.federatedTokenFile" .) }}
{{- end }}
{{- range $key := keys $data | sortAlpha }}
{{ $key }}: {{ get $data $key | quote }}
{{- end }}
{{- end }}

{{/*
The host LKPS_PUBLIC_URL is derived from when `config` does not set it: the first TLS host of the Ingress,
else the first Ingress host (TLS terminated in front of the Ingress; lkps refuses plaintext anyway).
*/}}
{{- define "lkps.publicHost" -}}
{{- if and .Values.ingress.enabled .Values.ingress.tls }}
{{- first (first .Values.ingress.tls).hosts }}
{{- else if .Values.ingress.hosts }}
{{- (first .Values.ingress.hosts).host }}
{{- end }}
{{- end }}

{{/*
Secret settings as env entries, each from a secretKeyRef into the existing Secret. Call with (list $ names):
the server gets every mapped secret, the one-shot commands only the database URL.
*/}}
{{- define "lkps.secretEnv" -}}
{{- $root := index . 0 }}
{{- $secretName := include "lkps.secretName" $root }}
{{- range $name := index . 1 }}
{{- $key := get $root.Values.secrets.keys $name }}
{{- if $key }}
- name: {{ $name | quote }}
  valueFrom:
    secretKeyRef:
      name: {{ $secretName | quote }}
      key: {{ $key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Writable /tmp for the read-only root filesystem, plus user volumes. */}}
{{- define "lkps.volumes" -}}
- name: "tmp"
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit | quote }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lkps.volumeMounts" -}}
- name: "tmp"
  mountPath: "/tmp"
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod template spec of the one-shot commands (`lkps migrate`, `lkps prune`). The settings are inlined as
env rather than read from the ConfigMap: a pre-install hook runs before the ConfigMap exists.
Call with (dict "root" $ "name" "migrate" "args" (list ...) "resources" ... "serviceAccountName" "...").
*/}}
{{- define "lkps.commandPodSpec" -}}
{{- $root := .root }}
{{- with .serviceAccountName }}
serviceAccountName: {{ . | quote }}
{{- end }}
automountServiceAccountToken: false
restartPolicy: "Never"
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: {{ .name | quote }}
    image: {{ include "lkps.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy | quote }}
    args:
      {{- range .args }}
      - {{ . | quote }}
      {{- end }}
    env:
      {{- range $key, $value := include "lkps.configData" $root | fromYaml }}
      - name: {{ $key | quote }}
        value: {{ $value | quote }}
      {{- end }}
      {{- /* Only what `lkps migrate` and `lkps prune` read: no LiveKit, Entra or Redis secret. */}}
      {{- include "lkps.secretEnv" (list $root (list "LKPS_DATABASE_URL")) | trim | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    volumeMounts:
      {{- include "lkps.volumeMounts" $root | nindent 6 }}
volumes:
  {{- include "lkps.volumes" $root | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
