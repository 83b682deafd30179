# Versions of the real components the cluster backend runs; one place, sourced
# by the build and run scripts. The cache is keyed by these.
KUBERNETES_VERSION=v1.34.4
CSI_PROVISIONER_VERSION=v6.4.0
CSI_ATTACHER_VERSION=v4.13.0
CSI_RESIZER_VERSION=v2.3.0
CSI_SNAPSHOTTER_VERSION=v8.7.0
HELM_VERSION=v3.22.0
HELM4_VERSION=v4.3.1
