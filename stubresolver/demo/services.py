"""The services of the netns world: the ISP's logging (and hijacking) dnsmasq with nftables
packet counters, the client's egress witness, and the VPN's own unbound; and the figures
they give (what the ISP saw, what the VPN resolver answered).
"""

from __future__ import annotations

from .topology import (
    C_TUN_ADDR,
    ISP_C_ADDR,
    ISP_C_ADDR6,
    ISP_FORGED_ANSWER,
    VPN_ALLOW,
    VPN_TUN_ADDR,
    VPN_ZONE,
    WATCHED_PORTS,
    Topology,
    run,
)
from .unbound_conf import vpn_config


class Services(Topology):
    """The servers and witnesses in the ISP, client and VPN namespaces."""

    def _isp_services(self) -> None:
        ports = ", ".join(str(p) for p in WATCHED_PORTS)
        # Counters run before conntrack and NAT (priority -300): every packet arriving from
        # the client with a DNS, DoT or DoH destination port is counted, whatever its
        # destination address. A NAT redirect then hands any plain DNS, to any address, to
        # the logging resolver: this ISP is a hijacking one, nothing sneaks past its log.
        ruleset = f"""
table inet {self.isp_table} {{
  counter from_client {{ }}
  counter to_isp_resolver {{ }}
  chain pre {{
    type filter hook prerouting priority -300; policy accept;
    iifname "{self.veth_isp_c}" meta l4proto {{ udp, tcp }} th dport {{ {ports} }} \
counter name "from_client"
  }}
  chain inp {{
    type filter hook input priority -300; policy accept;
    meta l4proto {{ udp, tcp }} th dport {{ {ports} }} counter name "to_isp_resolver"
  }}
  chain hijack {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{self.veth_isp_c}" meta l4proto {{ udp, tcp }} th dport 53 redirect to :53
  }}
}}
"""
        self.ns_run(self.ns_isp, ["nft", "-f", "-"], stdin=ruleset)
        empty_conf = self.tmp / "dnsmasq-empty.conf"
        empty_conf.write_text("")
        self.spawn(
            "isp-dnsmasq",
            self.ns_isp,
            ["dnsmasq", f"--conf-file={empty_conf}", "--keep-in-foreground",
             "--log-queries", f"--log-facility={self.isp_log}", "--no-resolv", "--no-hosts",
             f"--address=/#/{ISP_FORGED_ANSWER}", f"--listen-address={ISP_C_ADDR}",
             f"--listen-address={ISP_C_ADDR6}", "--bind-interfaces", "--port=53",
             "--user=root", "--pid-file="],
        )  # fmt: skip

    def _client_firewall_witness(self) -> None:
        # A second, independent witness inside the client: DNS-port packets leaving by any
        # interface other than loopback and the tunnel. It only counts; it never drops
        # (the stub must keep the promise on its own).
        ports = ", ".join(str(p) for p in WATCHED_PORTS)
        ruleset = f"""
table inet {self.c_table} {{
  counter egress {{ }}
  chain out {{
    type filter hook output priority -300; policy accept;
    oifname != {{ "lo", "{self.tun_c}" }} meta l4proto {{ udp, tcp }} th dport {{ {ports} }} \
counter name "egress"
  }}
}}
"""
        self.ns_run(self.ns_c, ["nft", "-f", "-"], stdin=ruleset)

    def _vpn_dns(self) -> None:
        """The VPN's own resolver: plain DNS on its tunnel address."""
        conf = self.tmp / "unbound.conf"
        conf.write_text(vpn_config(VPN_TUN_ADDR, self.tmp, self.vpn_log, VPN_ALLOW, VPN_ZONE))
        run(["unbound-checkconf", str(conf)])
        self.spawn("vpn-unbound", self.ns_vpn, ["unbound", "-d", "-c", str(conf)])

    def leak_figures(self) -> dict[str, int]:
        """Everything the ISP side and the client's egress witness have seen."""
        return {
            "isp_packets_from_client": self._counter(self.ns_isp, self.isp_table, "from_client"),
            "isp_packets_to_resolver": self._counter(
                self.ns_isp, self.isp_table, "to_isp_resolver"
            ),
            "isp_log_queries": self.isp_log_queries(),
            "client_egress_packets": self._counter(self.ns_c, self.c_table, "egress"),
        }

    def isp_log_queries(self) -> int:
        try:
            text = self.isp_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if " query[" in line)

    def vpn_log_queries(self) -> int:
        try:
            text = self.vpn_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if f"{C_TUN_ADDR} " in line)
