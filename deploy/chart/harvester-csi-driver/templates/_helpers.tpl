{{/* The CSI driver name: fixed, the same as upstream's, so volumes carry over. */}}
{{- define "hcsi.driverName" -}}driver.harvesterhci.io{{- end -}}

{{- define "hcsi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-based name; objects add a -controller / -node suffix, so a fullname
     is cut to leave room for it within 63 characters. */}}
{{- define "hcsi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hcsi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "hcsi.name" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (list $ "controller"|"node"). */}}
{{- define "hcsi.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "hcsi.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* An image reference: (list $ .Values.image.csi.provisioner defaultTag).
     With a mirror registry (global.cattle.systemDefaultRegistry, else
     image.registry), the repository's own registry part is replaced by it; a
     repository without one (upstream's rancher/...) gets it in front, as upstream
     does. */}}
{{- define "hcsi.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $tag := index . 2 -}}
{{- $mirror := coalesce ((($root.Values.global).cattle).systemDefaultRegistry) $root.Values.image.registry "" -}}
{{- $repository := $image.repository -}}
{{- if $mirror -}}
{{- $parts := splitList "/" $repository -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repository = join "/" (rest $parts) -}}
{{- end -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $mirror) $repository -}}
{{- end -}}
{{- printf "%s:%s" $repository (default $tag $image.tag) -}}
{{- end -}}

{{/* The driver image. Upstream's Go driver (an upstream values file's
     image.harvester.csiDriver) cannot run with this chart's flags: refuse it
     instead of crash-looping. */}}
{{- define "hcsi.driverImage" -}}
{{- $image := .Values.image.harvester.csiDriver -}}
{{- if regexMatch "(^|/)rancher/harvester-csi-driver$" $image.repository -}}
{{- fail (printf "image.harvester.csiDriver.repository %q is the upstream Go driver, which this chart does not run (other flags, other modes): remove image.harvester.csiDriver from your values to use this chart's driver image" $image.repository) -}}
{{- end -}}
{{- include "hcsi.image" (list . $image .Chart.AppVersion) -}}
{{- end -}}

{{/* imagePullSecrets from imagePullSecrets and global.cattle.imagePullSecrets,
     each a name or a {name: ...}. */}}
{{- define "hcsi.imagePullSecrets" -}}
{{- $names := list -}}
{{- range concat (.Values.imagePullSecrets | default list) ((((.Values.global).cattle).imagePullSecrets) | default list) -}}
{{- if kindIs "map" . -}}
{{- if .name }}{{ $names = append $names .name }}{{ end -}}
{{- else if . -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- if $names }}
imagePullSecrets:
{{- range $names | uniq }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Kubelet paths. kubeletRootDir may hold $(NODE_NAME): the host directory
     mounted is then the part before /$(NODE_NAME) ("hcsi.kubeletHostDir") and a
     node's own directories are reached with subPathExpr ("hcsi.kubeletSubPath"
     is the path below the host directory, empty without $(NODE_NAME)). */}}
{{- define "hcsi.kubeletRoot" -}}
{{- $dir := trimSuffix "/" .Values.kubeletRootDir -}}
{{- if not (hasPrefix "/" $dir) -}}{{- fail (printf "kubeletRootDir %q must be an absolute path" .Values.kubeletRootDir) -}}{{- end -}}
{{- $dir -}}
{{- end -}}
{{- define "hcsi.kubeletHostDir" -}}
{{- $root := include "hcsi.kubeletRoot" . -}}
{{- if contains "$(NODE_NAME)" $root -}}
{{- $base := index (splitList "/$(NODE_NAME)" $root) 0 -}}
{{- if or (not $base) (contains "$(" $base) -}}{{- fail (printf "kubeletRootDir %q: $(NODE_NAME) must follow a fixed directory, as in /var/lib/nodes/$(NODE_NAME)/kubelet" .Values.kubeletRootDir) -}}{{- end -}}
{{- $base -}}
{{- else -}}
{{- $root -}}
{{- end -}}
{{- end -}}
{{- define "hcsi.kubeletSubPath" -}}
{{- $root := include "hcsi.kubeletRoot" . -}}
{{- $base := include "hcsi.kubeletHostDir" . -}}
{{- trimPrefix "/" (trimPrefix $base $root) -}}
{{- end -}}
{{/* The plugin's socket directory as the kubelet sees it. */}}
{{- define "hcsi.pluginDir" -}}
{{- include "hcsi.kubeletRoot" . }}/plugins/{{ include "hcsi.driverName" . }}
{{- end -}}

{{/* A volume of a kubelet directory and how to mount it: (list $ "name" "relative/dir").
     "hcsi.kubeletVolume" gives the volume, "hcsi.kubeletMount" the mount's source part. */}}
{{- define "hcsi.kubeletVolume" -}}
{{- $root := index . 0 -}}
{{- $sub := include "hcsi.kubeletSubPath" $root -}}
- name: {{ index . 1 }}
  hostPath:
    {{- if $sub }}
    path: {{ include "hcsi.kubeletHostDir" $root }}
    {{- else }}
    path: {{ include "hcsi.kubeletRoot" $root }}/{{ index . 2 }}
    {{- end }}
    type: DirectoryOrCreate
{{- end -}}
{{- define "hcsi.kubeletMount" -}}
{{- $root := index . 0 -}}
{{- $sub := include "hcsi.kubeletSubPath" $root -}}
- name: {{ index . 1 }}
  mountPath: {{ index . 3 }}
  {{- if $sub }}
  subPathExpr: {{ $sub }}/{{ index . 2 }}
  {{- end }}
{{- end -}}

{{/* The cloud-config volume, its mount and the driver flag. */}}
{{- define "hcsi.cloudConfigVolume" -}}
- name: cloud-config
  {{- if .Values.cloudConfig.secretName }}
  secret:
    secretName: {{ .Values.cloudConfig.secretName }}
    defaultMode: 256  # 0400: numbers stay decimal, which every YAML parser reads alike
    items:
      - key: {{ .Values.cloudConfig.fileName }}
        path: {{ .Values.cloudConfig.fileName }}
  {{- else if .Values.cloudConfig.hostPath }}
  hostPath:
    path: {{ .Values.cloudConfig.hostPath }}
    type: DirectoryOrCreate
  {{- else }}
  {{- fail "cloudConfig: set secretName (recommended) or hostPath" }}
  {{- end }}
{{- end -}}
{{/* Changes when the cloud-config source or the Secret's content changes, so
     `helm upgrade` after `kubectl create secret ... --dry-run=client -o yaml |
     kubectl apply -f -` restarts the pods (the driver reads the file at start).
     The Secret is only known on a live install: lookup is empty under
     `helm template`. */}}
{{- define "hcsi.cloudConfigChecksum" -}}
{{- $content := "" -}}
{{- if .Values.cloudConfig.secretName -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.cloudConfig.secretName -}}
{{- $content = toJson (($secret).data | default dict) -}}
{{- end -}}
{{- printf "%s%s" (toJson .Values.cloudConfig) $content | sha256sum | trunc 16 -}}
{{- end -}}
{{- define "hcsi.cloudConfigMount" -}}
- name: cloud-config
  mountPath: /var/lib/harvester
  readOnly: true
{{- end -}}
{{- define "hcsi.cloudConfigArg" -}}
- --kubeconfig=/var/lib/harvester/{{ .Values.cloudConfig.fileName }}
{{- end -}}

{{/* nodeSelector / tolerations / affinity of a component: (list $ .Values.controller). */}}
{{- define "hcsi.scheduling" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $selector := merge (deepCopy ($component.nodeSelector | default dict)) ($root.Values.nodeSelector | default dict) -}}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat ($root.Values.tolerations | default list) ($component.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Leader election flags every controller sidecar gets. */}}
{{- define "hcsi.leaderElection" -}}
- --leader-election
- --leader-election-namespace=$(POD_NAMESPACE)
{{- end -}}

{{- define "hcsi.podNamespaceEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* A container's securityContext when it needs no privilege at all. */}}
{{- define "hcsi.restricted" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* host:port for --metrics-address: (list bindAddress port); IPv6 in brackets. */}}
{{- define "hcsi.listen" -}}
{{- $address := index . 0 -}}
{{- if and (contains ":" $address) (not (hasPrefix "[" $address)) -}}
{{- printf "[%s]:%v" $address (index . 1) -}}
{{- else -}}
{{- printf "%s:%v" $address (index . 1) -}}
{{- end -}}
{{- end -}}
