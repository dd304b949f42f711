#!/bin/sh
# Optional: podman (+ runc, catatonit) runs the stage images for `clara-wf test --engine
# container`, and mmdebstrap builds the local base image when no registry is reachable
# (tools/base_image.py). Without them every other engine still works.
# Debian 12's podman needs runc here (crun fails on hybrid cgroups) and catatonit for the
# pod's infra container; clara-wf points podman at clara_wf/containers/containers.conf.
missing=""
for tool in podman runc catatonit mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/libexec/podman/$tool" ] || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install_podman] installing${missing} (Debian packages) ..." >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1; } \
        || echo "[install_podman] could not install${missing}; the container engine needs podman or docker" >&2
else
    echo "[install_podman] note: for --engine container install${missing} (apt-get install${missing}), or use Docker" >&2
fi
exit 0
