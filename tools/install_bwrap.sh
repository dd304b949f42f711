#!/bin/sh
# Optional: bubblewrap lets the local engine give each stage the pod's real paths
# (/app/input, ...). Without it the engine still runs every stage (paths rewritten).
command -v bwrap >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install_bwrap] installing bubblewrap (Debian package) ..." >&2
    apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } \
        || echo "[install_bwrap] could not install bubblewrap; the local engine will rewrite paths instead" >&2
else
    echo "[install_bwrap] note: install bubblewrap (apt-get install bubblewrap) for pod paths in local runs" >&2
fi
exit 0
