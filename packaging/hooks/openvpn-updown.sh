#!/bin/sh
# stubresolver hook for OpenVPN: tell the running stub that the tunnel came up or went down,
# and hand it the DNS servers and domains the VPN pushed.
#
#   openvpn ... --script-security 2 \
#       --up /usr/local/lib/stubresolver/openvpn-updown.sh \
#       --down /usr/local/lib/stubresolver/openvpn-updown.sh
#
# (or `up`/`down` lines in the .conf). OpenVPN runs --up after the tun device is configured
# and --down after it is closed; its environment says which (script_type=up|down, dev=tun0).
#
# The stub does not need this hook to stay leak-free: it watches the tunnel through netlink
# anyway. So this script never fails the VPN: it exits 0 even when the stub is not running,
# and only says so on stderr (OpenVPN's log). Running it twice is harmless.
#
# On up, the servers and domains the server pushed (foreign_option_N="dhcp-option DNS 10.8.0.1",
# "dhcp-option DNS6 fd00::1", "dhcp-option DOMAIN corp.example", "dhcp-option DOMAIN-SEARCH
# ...") go to the stub as `stubresolver tunnel-up --interface $dev --dns ... --domain ...`:
# the `vpn` upstream asks those servers and names below those domains route to it. With no
# server pushed the hook only says the tunnel changed. On down it runs `tunnel-down`: the
# stub forgets the servers and refuses at once.
#
# With `--user nobody` OpenVPN runs --down unprivileged: put it in the stub's group
# (`--group stubresolver`, server.group in the config) so it can still reach the control
# socket. If it cannot, that is logged here and harmless (netlink sees the tunnel go away).
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

case $event in
    up)
        set -- tunnel-up --interface "$device"
        servers=0
        i=1
        # foreign_option_1, _2, ...: what the server pushed, in order, until the first gap.
        while [ "$i" -le 64 ]; do
            eval "option=\${foreign_option_$i:-}"
            [ -n "$option" ] || break
            case $option in
                "dhcp-option DNS "* | "dhcp-option DNS6 "*)
                    set -- "$@" --dns "${option##* }"
                    servers=$((servers + 1))
                    ;;
                "dhcp-option DOMAIN "* | "dhcp-option DOMAIN-SEARCH "*)
                    set -- "$@" --domain "${option##* }"
                    ;;
            esac
            i=$((i + 1))
        done
        [ "$servers" -gt 0 ] || set -- tunnel-changed
        ;;
    down) set -- tunnel-down --interface "$device" ;;
    *) set -- tunnel-changed ;;
esac
if [ -n "${STUBRESOLVER_SOCKET:-}" ]; then
    set -- "$@" --socket "$STUBRESOLVER_SOCKET"
fi
if ! out=$("$stub" "$@" 2>&1); then
    echo "stubresolver hook ($event $device): $out (the stub still sees the tunnel by netlink)" >&2
fi
exit 0
