#!/bin/sh
# Optional: independent DICOM software the DICOM adapter's tests and benchmark talk to -
# dcmtk (echoscu, storescu, storescp), Orthanc (a PACS with a REST API) and dicom3tools
# (dciodvfy, the reference validator). Without them those tests are skipped with the reason.
missing=""
command -v storescp >/dev/null 2>&1 && [ -x /usr/bin/storescp ] || missing="$missing dcmtk"
command -v Orthanc >/dev/null 2>&1 || missing="$missing orthanc"
command -v dciodvfy >/dev/null 2>&1 || missing="$missing dicom3tools"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install_dicom_tools] installing${missing} (Debian packages) ..." >&2
    # Orthanc's package starts a system service: keep it from starting (the tests run their own).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.clara-wf && chmod +x /usr/sbin/policy-rc.d.clara-wf
    [ -e /usr/sbin/policy-rc.d ] || cp /usr/sbin/policy-rc.d.clara-wf /usr/sbin/policy-rc.d
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1; } \
        || echo "[install_dicom_tools] could not install${missing}; the DICOM adapter tests that need them are skipped" >&2
    cmp -s /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.clara-wf && rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.clara-wf
else
    echo "[install_dicom_tools] note: the DICOM adapter tests use${missing} (apt-get install${missing})" >&2
fi
exit 0
