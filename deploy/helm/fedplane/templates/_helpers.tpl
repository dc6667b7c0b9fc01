{{/*
The namespace of every namespaced object.
*/}}
{{- define "fedplane.namespace" -}}
{{ .Values.namespace.name }}
{{- end }}

{{/*
The labels of every object's metadata: the kustomize tree's app.kubernetes.io/part-of, and
Helm's usual ones. Selectors and pod templates carry only app.kubernetes.io/name, as in the
kustomize tree, so that a release can take over objects applied with kustomize (selectors are
immutable).
*/}}
{{- define "fedplane.labels" -}}
app.kubernetes.io/part-of: fedplane
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/*
The image of the three programs.
*/}}
{{- define "fedplane.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/*
The container's image and pull policy.
*/}}
{{- define "fedplane.containerImage" -}}
image: {{ include "fedplane.image" . | quote }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/*
The data of the ConfigMap fedplane-settings, which fedplane-dns and fedplane-controller read as
environment variables; its checksum rolls them when it changes.
*/}}
{{- define "fedplane.settingsData" -}}
FEDPLANE_DOMAIN: {{ .Values.domain | quote }}
FEDPLANE_FEDERATION: {{ .Values.federation | quote }}
FEDPLANE_ETCD_ENDPOINTS: {{ join "," .Values.etcd.endpoints | quote }}
FEDPLANE_ETCD_PREFIX: {{ .Values.etcd.prefix | quote }}
{{- end }}

{{/*
The data of the ConfigMap fedplane-vipd-config (the groups); its checksum rolls the DaemonSet.
*/}}
{{- define "fedplane.vipdConfigData" -}}
config.yaml: |
  # fedplane-vipd's groups on every node (the chart's value vipd.groups).
  {{- toYaml (dict "groups" .Values.vipd.groups) | nindent 2 }}
{{- end }}

{{/*
The checks the schema cannot make, each failing with what to set. Rendered by validate.yaml.
*/}}
{{- define "fedplane.validate" -}}
{{- $v := .Values }}
{{- if not (or $v.roles.host $v.roles.member) }}
{{- fail "fedplane: nothing to install: set roles.host (fedplane-controller) and/or roles.member (fedplane-dns, fedplane-vipd) to true" }}
{{- end }}
{{- if $v.roles.host }}
{{- if and $v.controller.kubeconfig $v.controller.existingSecret }}
{{- fail "fedplane: set controller.kubeconfig or controller.existingSecret, not both" }}
{{- end }}
{{- if not (or $v.controller.kubeconfig $v.controller.existingSecret) }}
{{- fail "fedplane: roles.host needs the members' kubeconfig: write it with deploy/member-kubeconfig and pass --set-file controller.kubeconfig=members.kubeconfig, or name a Secret holding it (key kubeconfig) in controller.existingSecret" }}
{{- end }}
{{- with $v.controller.kubeconfig }}
{{- $kubeconfig := fromYaml . }}
{{- if or (hasKey $kubeconfig "Error") (ne (toString $kubeconfig.kind) "Config") }}
{{- fail "fedplane: controller.kubeconfig is not a kubeconfig (kind: Config): pass the file's content with --set-file controller.kubeconfig=members.kubeconfig, not its name with --set" }}
{{- end }}
{{- range $kubeconfig.contexts }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "fedplane: controller.kubeconfig has the context %q, which is not a DNS label; the controller names the member cluster after it in the records: rename it (deploy/member-kubeconfig %s=NAME)" (toString .name) (toString .name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $v.etcd.endpoints }}
{{- if and $v.etcd.tls.enabled (not (hasPrefix "https://" .)) }}
{{- fail (printf "fedplane: etcd.tls.enabled needs https:// endpoints, but etcd.endpoints has %s" .) }}
{{- end }}
{{- if and (not $v.etcd.tls.enabled) (hasPrefix "https://" .) }}
{{- fail (printf "fedplane: etcd.endpoints has %s: https:// needs etcd.tls.enabled (and the Secret etcd.tls.secretName)" .) }}
{{- end }}
{{- end }}
{{- if $v.roles.member }}
{{- $groups := dict }}
{{- range $v.vipd.groups }}
{{- $key := printf "VRID %v on %s (%s)" .vrid .interface .family }}
{{- if hasKey $groups $key }}
{{- fail (printf "fedplane: vipd.groups has two groups with %s" $key) }}
{{- end }}
{{- $_ := set $groups $key true }}
{{- end }}
{{- $pools := dict }}
{{- range $v.vipd.pools }}
{{- if hasKey $pools .name }}
{{- fail (printf "fedplane: vipd.pools has two pools named %s" .name) }}
{{- end }}
{{- $_ := set $pools .name true }}
{{- end }}
{{- end }}
{{- end }}
