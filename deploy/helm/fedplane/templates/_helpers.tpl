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
FEDPLANE_CLUSTER_DOMAIN: {{ .Values.cluster.domain | quote }}
FEDPLANE_CLUSTER_ZONE: {{ .Values.cluster.zone | quote }}
FEDPLANE_CLUSTER_REGION: {{ .Values.cluster.region | quote }}
{{- end }}

{{/*
How fedplane-dns and fedplane-controller get the variables of fedplane-settings, by name (for
the check of their extraEnv).
*/}}
{{- define "fedplane.settingsEnv" -}}
{{- range $name, $_ := include "fedplane.settingsData" . | fromYaml }}
{{ $name }}: "from the ConfigMap fedplane-settings: set domain, federation, etcd.endpoints, etcd.prefix or cluster instead"
{{- end }}
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
The pattern of an IPv4 address in dotted decimal, without leading zeros (as fedplane-vipd
parses it).
*/}}
{{- define "fedplane.ipv4Pattern" -}}
{{- $o := `(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])` -}}
{{- printf `%s(\.%s){3}` $o $o -}}
{{- end }}

{{/*
The pattern of an IPv6 address in any form of RFC 4291 (RE2 has no lookahead, so it lists them):
eight groups; "::" with 0 to 7 groups around it; and the same with an IPv4 address in the place
of the last two groups. Case does not matter; zone indexes (%eth0) are not addresses here.
*/}}
{{- define "fedplane.ipv6Pattern" -}}
{{- $h := `[0-9A-Fa-f]{1,4}` -}}
{{- $v4 := include "fedplane.ipv4Pattern" . -}}
{{- $alts := list (printf `(%s:){7}%s` $h $h) (printf `::((%s:){0,6}%s)?` $h $h) (printf `(%s:){6}%s::` $h $h) -}}
{{- range $j := until 6 -}}
{{- $alts = append $alts (printf `(%s:){%d}%s::((%s:){0,%d}%s)?` $h $j $h $h (sub 5 $j) $h) -}}
{{- end -}}
{{- $alts = append $alts (printf `(%s:){6}%s` $h $v4) -}}
{{- $alts = append $alts (printf `::(%s:){0,5}%s` $h $v4) -}}
{{- range $j := until 5 -}}
{{- $alts = append $alts (printf `(%s:){%d}%s::(%s:){0,%d}%s` $h $j $h $h (sub 4 $j) $v4) -}}
{{- end -}}
({{ join "|" $alts }})
{{- end }}

{{/*
The family of the address (a string): ipv4, ipv6, or nothing when it is not one.
*/}}
{{- define "fedplane.ipFamily" -}}
{{- if regexMatch (printf "^%s$" (include "fedplane.ipv4Pattern" .)) . -}}
ipv4
{{- else if regexMatch (printf "^%s$" (include "fedplane.ipv6Pattern" .)) . -}}
ipv6
{{- end -}}
{{- end }}

{{/*
An IPv4 address (a string) as a number.
*/}}
{{- define "fedplane.ipv4Number" -}}
{{- $o := splitList "." . -}}
{{- add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) -}}
{{- end }}

{{/*
Fails unless .s is what fedplane-vipd takes in a pool's addresses and reserved: an address, a
CIDR with a prefix length of its family (IPv4: no host bits set) or a range a-b of two addresses
of one family (IPv4: not ending before it starts). .at names the value. fedplane-vipd itself
also refuses IPv6 CIDRs with host bits set and backward IPv6 ranges, which this leaves to it.
*/}}
{{- define "fedplane.checkPoolEntry" -}}
{{- $s := .s }}
{{- $at := printf "fedplane: %s has %q" .at $s }}
{{- if contains "/" $s }}
{{- $parts := splitList "/" $s }}
{{- $family := include "fedplane.ipFamily" (first $parts) }}
{{- $length := last $parts }}
{{- if or (ne (len $parts) 2) (not $family) (not (regexMatch "^(0|[1-9][0-9]{0,2})$" $length)) (gt (atoi $length) (ternary 32 128 (eq $family "ipv4"))) }}
{{- fail (printf "%s, which is not a CIDR: an IPv4 address with a prefix length of 0-32 (10.4.0.0/24) or an IPv6 address with 0-128 (fd00:4::/120)" $at) }}
{{- end }}
{{- if eq $family "ipv4" }}
{{- $n := include "fedplane.ipv4Number" (first $parts) | atoi }}
{{- $size := 1 }}
{{- range until (sub 32 (atoi $length) | int) }}
{{- $size = mul $size 2 }}
{{- end }}
{{- if mod $n $size }}
{{- $net := sub $n (mod $n $size) }}
{{- fail (printf "%s, whose host bits are set: the network is %d.%d.%d.%d/%s" $at (div $net 16777216) (mod (div $net 65536) 256) (mod (div $net 256) 256) (mod $net 256) $length) }}
{{- end }}
{{- end }}
{{- else if contains "-" $s }}
{{- $parts := splitList "-" $s }}
{{- $from := include "fedplane.ipFamily" (first $parts) }}
{{- if or (ne (len $parts) 2) (not $from) (ne $from (include "fedplane.ipFamily" (last $parts))) }}
{{- fail (printf "%s, which is not a range: two IPv4 or two IPv6 addresses, first-last (10.4.1.10-10.4.1.20, fd00:4::10-fd00:4::20)" $at) }}
{{- end }}
{{- if and (eq $from "ipv4") (gt (include "fedplane.ipv4Number" (first $parts) | atoi) (include "fedplane.ipv4Number" (last $parts) | atoi)) }}
{{- fail (printf "%s, a range that ends before it starts" $at) }}
{{- end }}
{{- else if not (include "fedplane.ipFamily" $s) }}
{{- fail (printf "%s, which is not an IPv4 or IPv6 address, a CIDR (10.4.0.0/24) or a range (10.4.1.10-10.4.1.20)" $at) }}
{{- end }}
{{- end }}

{{/*
Fails unless .s is a CIDR or an address of fedplane-dns's access lists, optionally followed
by ,key=NAME naming a key of .keys (a dict of the names of dns.tsig.keys, lowercase without
the trailing dot, to their names as given); .at names the value, .keyed whether the key is
required, .address whether the first part is a NOTIFY target (ADDR, ADDR:PORT, [IPv6]:PORT)
rather than a CIDR.
*/}}
{{- define "fedplane.checkKeyedEntry" -}}
{{- $s := .s }}
{{- $at := printf "fedplane: %s has %q" .at $s }}
{{- $first := $s }}
{{- $key := "" }}
{{- /* The schema allows nothing else after a comma than key=NAME. */}}
{{- if contains ",key=" $s }}
{{- $first = regexReplaceAll ",key=.*$" $s "" }}
{{- $key = regexReplaceAll "^[^,]*,key=" $s "" }}
{{- end }}
{{- $which := ternary "which" (printf "whose %q" $first) (eq $first $s) }}
{{- if .address }}
{{- $ip := $first }}
{{- if regexMatch `^\[.*\]:[0-9]{1,5}$` $first }}
{{- $ip = regexReplaceAll `^\[(.*)\]:[0-9]+$` $first "${1}" }}
{{- else if regexMatch `^[0-9.]+:[0-9]{1,5}$` $first }}
{{- $ip = regexReplaceAll `:[0-9]+$` $first "" }}
{{- end }}
{{- if not (include "fedplane.ipFamily" $ip) }}
{{- fail (printf "%s, %s is not an address: give ADDR, ADDR:PORT or [IPv6]:PORT (192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)" $at $which) }}
{{- end }}
{{- else }}
{{- $parts := splitList "/" $first }}
{{- $family := include "fedplane.ipFamily" (first $parts) }}
{{- if or (gt (len $parts) 2) (not $family) (and (eq (len $parts) 2) (or (not (regexMatch "^(0|[1-9][0-9]{0,2})$" (last $parts))) (gt (atoi (last $parts)) (ternary 32 128 (eq $family "ipv4"))))) }}
{{- fail (printf "%s, %s is not an address or a CIDR: an IPv4 address with a prefix length of 0-32 (192.0.2.53/32, 10.0.0.0/8) or an IPv6 address with 0-128 (2001:db8::/32)" $at $which) }}
{{- end }}
{{- end }}
{{- if and .keyed (not $key) }}
{{- fail (printf "%s without a key: UPDATE needs one, CIDR,key=NAME with NAME a key of dns.tsig.keys (10.0.0.0/8,key=ddns)" $at) }}
{{- end }}
{{- if and $key (not (hasKey .keys (lower (trimSuffix "." $key)))) }}
{{- fail (printf "%s, which names the TSIG key %s, not one of dns.tsig.keys (%s): add {name: %s, algorithm: ...} there and the key to the Secret dns.tsig.secretName" $at $key (join ", " (values .keys | sortAlpha) | default "none") $key) }}
{{- end }}
{{- end }}

{{/*
The checks of one program's pod values (dns, controller, vipd), each failing with what to set:
.key names the program's values, .values are they, .program is its name (and its pods'
app.kubernetes.io/name), .args the arguments the chart passes it (a YAML list), .repeatable the
flags among them it takes more than once, .env the variables the chart sets (name: how).
*/}}
{{- define "fedplane.validateProgram" -}}
{{- $key := .key }}
{{- $program := .program }}
{{- if hasKey .values.podLabels "app.kubernetes.io/name" }}
{{- fail (printf "fedplane: %s.podLabels sets app.kubernetes.io/name, the label the chart selects the pods of %s by (it is always %s): use another label" $key $program $program) }}
{{- end }}
{{- range $name, $_ := .values.podAnnotations }}
{{- if hasPrefix "checksum/fedplane-" $name }}
{{- fail (printf "fedplane: %s.podAnnotations sets %s: checksum/fedplane-* annotations are the chart's own (they roll the pods when their configuration changes)" $key $name) }}
{{- end }}
{{- end }}
{{- $args := fromYamlArray .args }}
{{- $repeatable := .repeatable }}
{{- range $extra := .values.extraArgs }}
{{- if hasPrefix "--" $extra }}
{{- $flag := regexReplaceAll "=.*$" $extra "" }}
{{- range $args }}
{{- if and (eq (regexReplaceAll "=.*$" . "") $flag) (not (has $flag $repeatable)) }}
{{- fail (printf "fedplane: %s.extraArgs has %q, a flag the chart passes itself (%s), and %s stops on a flag given twice: leave it out (what the chart passes is set by its values, README.md)" $key $extra . $program) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range .values.extraEnv }}
{{- if hasKey $seen .name }}
{{- fail (printf "fedplane: %s.extraEnv sets %s twice" $key .name) }}
{{- end }}
{{- if and (hasKey . "value") (hasKey . "valueFrom") }}
{{- fail (printf "fedplane: %s.extraEnv sets %s with both value and valueFrom: give it one of them" $key .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- range $name, $how := .env }}
{{- if hasKey $seen $name }}
{{- fail (printf "fedplane: %s.extraEnv sets %s, which the chart sets %s" $key $name $how) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The checks the schema cannot make, each failing with what to set. Rendered by validate.yaml.
*/}}
{{- define "fedplane.validate" -}}
{{- $v := .Values }}
{{- if not (or $v.roles.host $v.roles.member) }}
{{- fail "fedplane: nothing to install: set roles.host (fedplane-controller) and/or roles.member (fedplane-dns, fedplane-vipd) to true" }}
{{- end }}
{{- if and $v.namespace.create (eq .Release.Namespace $v.namespace.name) }}
{{- fail (printf "fedplane: namespace.create is true, but the release is installed into that namespace (--namespace %s): Helm keeps the release's record there, so it cannot create or adopt the namespace itself. Either install the release into another, existing namespace (helm install --namespace default ...) or set namespace.create to false (and use --create-namespace)" $v.namespace.name) }}
{{- end }}
{{- if $v.roles.host }}
{{- range $v.controller.extraArgs }}
{{- if eq (regexReplaceAll "=.*$" . "") "--source" }}
{{- fail (printf "fedplane: controller.extraArgs has %q: set controller.sources instead (now %s): the members' fedplane-controller-reader gets the read permissions of the sources listed there, not of a flag" . (toJson $v.controller.sources)) }}
{{- end }}
{{- end }}
{{- include "fedplane.validateProgram" (dict "key" "controller" "values" $v.controller "program" "fedplane-controller" "args" (include "fedplane.controller.args" .) "repeatable" (list) "env" (include "fedplane.settingsEnv" . | fromYaml)) }}
{{- end }}
{{- if $v.roles.member }}
{{- include "fedplane.validateProgram" (dict "key" "dns" "values" $v.dns "program" "fedplane-dns" "args" (include "fedplane.dns.args" .) "repeatable" (list "--zone" "--listen" "--tsig-key" "--allow-transfer" "--notify" "--notify-source" "--allow-update") "env" (include "fedplane.settingsEnv" . | fromYaml)) }}
{{- include "fedplane.validateProgram" (dict "key" "vipd" "values" $v.vipd "program" "fedplane-vipd" "args" (include "fedplane.vipd.args" .) "repeatable" (list) "env" (dict "NODE_NAME" "to the node's name" "POD_NAME" "to the pod's name" "POD_NAMESPACE" "to the pod's namespace")) }}
{{- with $v.dns.service.clusterIP }}
{{- if eq . "None" }}
{{- fail "fedplane: dns.service.clusterIP is None, a headless Service, but CoreDNS forwards the zone to one address, the Service's ClusterIP: leave it empty for Kubernetes to choose one, or pin an unused address of the service range" }}
{{- end }}
{{- if not (include "fedplane.ipFamily" .) }}
{{- fail (printf "fedplane: dns.service.clusterIP is %q, which is not an IPv4 or IPv6 address: pin an unused address of the service range, or leave it empty" .) }}
{{- end }}
{{- end }}
{{- $tsig := dict }}
{{- range $v.dns.tsig.keys }}
{{- $n := lower (trimSuffix "." .name) }}
{{- if hasKey $tsig $n }}
{{- fail (printf "fedplane: dns.tsig.keys has two keys named %s" .name) }}
{{- end }}
{{- $_ := set $tsig $n .name }}
{{- end }}
{{- range $field := list "allowTransfer" "notify" "allowUpdate" }}
{{- range $i, $s := index $v.dns $field }}
{{- include "fedplane.checkKeyedEntry" (dict "at" (printf "dns.%s[%d]" $field $i) "s" $s "keys" $tsig "keyed" (eq $field "allowUpdate") "address" (eq $field "notify")) }}
{{- end }}
{{- end }}
{{- $families := dict }}
{{- range $v.dns.notifySource }}
{{- $family := include "fedplane.ipFamily" . }}
{{- if not $family }}
{{- fail (printf "fedplane: dns.notifySource has %q, which is not an IPv4 or IPv6 address" .) }}
{{- end }}
{{- if hasKey $families $family }}
{{- fail (printf "fedplane: dns.notifySource has two %s addresses: give at most one per family" (ternary "IPv4" "IPv6" (eq $family "ipv4"))) }}
{{- end }}
{{- $_ := set $families $family true }}
{{- end }}
{{- with $v.dns.externalService }}
{{- if .loadBalancerIP }}
{{- if ne .type "LoadBalancer" }}
{{- fail (printf "fedplane: dns.externalService.loadBalancerIP is set, but its type is %s: it needs LoadBalancer" .type) }}
{{- end }}
{{- if not (include "fedplane.ipFamily" .loadBalancerIP) }}
{{- fail (printf "fedplane: dns.externalService.loadBalancerIP is %q, which is not an IPv4 or IPv6 address" .loadBalancerIP) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $g := $v.vipd.groups }}
{{- range $g.unicast_peers }}
{{- $family := include "fedplane.ipFamily" . }}
{{- if ne $family $g.family }}
{{- fail (printf "fedplane: vipd.groups[%d] (VRID %v, %s) has the unicast peer %q, which is not an %s address" $i $g.vrid $g.family . (ternary "IPv4" "IPv6" (eq $g.family "ipv4"))) }}
{{- end }}
{{- if and (eq $family "ipv6") (not (regexMatch "^[fF][eE][89aAbB][0-9a-fA-F]:" .)) }}
{{- fail (printf "fedplane: vipd.groups[%d] (VRID %v) has the unicast peer %q: IPv6 peers are the nodes' link-local addresses (fe80::/10), which IPv6 adverts come from" $i $g.vrid .) }}
{{- end }}
{{- end }}
{{- if and (eq $g.family "ipv6") (eq (toString ($g.vrrp_version | default 3)) "2") }}
{{- fail (printf "fedplane: vipd.groups[%d] (VRID %v) is ipv6 with vrrp_version 2, which is IPv4 only: use 3" $i $g.vrid) }}
{{- end }}
{{- end }}
{{- if and $v.vipd.bgp.settings (not $v.vipd.bgp.enabled) }}
{{- fail "fedplane: vipd.bgp.settings is set but vipd.bgp.enabled is false: set it true (fedplane-vipd --bgp, its RBAC and run directory), or leave the settings out" }}
{{- end }}
{{- if and $v.vipd.bgp.enabled (not $v.vipd.bgp.settings) }}
{{- fail "fedplane: vipd.bgp.enabled is true but vipd.bgp.settings is empty: give at least its asn and peers (the pools document's bgp: section)" }}
{{- end }}
{{- if and $v.vipd.bgp.peerSecretName (not $v.vipd.bgp.enabled) }}
{{- fail "fedplane: vipd.bgp.peerSecretName is set but vipd.bgp.enabled is false" }}
{{- end }}
{{- range $i, $p := $v.vipd.pools }}
{{- if and (eq ($p.mode | default "l2") "bgp") (not $v.vipd.bgp.enabled) }}
{{- fail (printf "fedplane: vipd.pools[%d] (pool %s) is mode: bgp, which fedplane-vipd refuses without --bgp: set vipd.bgp.enabled (and vipd.bgp.settings, the asn and the peers)" $i $p.name) }}
{{- end }}
{{- range $field := list "addresses" "reserved" }}
{{- range (index $p $field | default list) }}
{{- include "fedplane.checkPoolEntry" (dict "at" (printf "vipd.pools[%d].%s (pool %s)" $i $field $p.name) "s" .) }}
{{- end }}
{{- end }}
{{- end }}
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
