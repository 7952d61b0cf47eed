#!/bin/sh
# stubresolver hook for OpenVPN: tell the running stub that the tunnel came up or went down,
# so it looks at once instead of waiting for the next netlink event or poll.
#
#   openvpn ... --script-security 2 \
#       --up /etc/stubresolver/hooks/openvpn-updown.sh \
#       --down /etc/stubresolver/hooks/openvpn-updown.sh
#
# (or `up`/`down` lines in the .conf). OpenVPN runs --up after the tun device is configured
# and --down after it is closed; its environment says which (script_type=up|down, dev=tun0).
#
# The stub does not need this hook to stay leak-free: it watches the tunnel through netlink
# anyway. So this script never fails the VPN: it exits 0 even when the stub is not running,
# and only says so on stderr (OpenVPN's log). Running it twice is harmless.
#
# With `--user nobody` OpenVPN runs --down unprivileged and cannot reach the root-only control
# socket; that is logged here and harmless (netlink sees the tunnel go away).
#
# Later versions hand the DNS servers the VPN pushes (foreign_option_N="dhcp-option DNS ...")
# to the stub from here.
#
# Environment: STUBRESOLVER (the command, default /opt/stubresolver/bin/stubresolver or
# `stubresolver` on PATH), STUBRESOLVER_SOCKET (control socket, default the stub's default).

event=${script_type:-updown}
device=${dev:-${1:-?}}

stub=${STUBRESOLVER:-}
if [ -z "$stub" ]; then
    if [ -x /opt/stubresolver/bin/stubresolver ]; then
        stub=/opt/stubresolver/bin/stubresolver
    else
        stub=$(command -v stubresolver 2>/dev/null) || stub=
    fi
fi
if [ -z "$stub" ]; then
    echo "stubresolver hook ($event $device): stubresolver command not found; skipped" >&2
    exit 0
fi

if [ -n "${STUBRESOLVER_SOCKET:-}" ]; then
    set -- tunnel-changed --socket "$STUBRESOLVER_SOCKET"
else
    set -- tunnel-changed
fi
if ! out=$("$stub" "$@" 2>&1); then
    echo "stubresolver hook ($event $device): $out (the stub still sees the tunnel by netlink)" >&2
fi
exit 0
