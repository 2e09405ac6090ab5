"""The proxy end-to-end suites' shared parts: a routescript proxy started with a script using t_relay,
and two (or three) Python UAs behind it, over UDP, TCP, TLS, WS or WSS, with 1 or 2 UDP workers."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import RunningServer, free_port, start

from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki

PROXY_SCRIPT = r"""
log_level = 4
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "textops.so"

modparam("tm", "fr_timeout", 2)
modparam("tm", "fr_inv_timeout", 3)
modparam("tm", "onreply_avp_mode", 1)

route {
    if (!mf_process_maxfwd_header(10)) { sl_send_reply(483, "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) {
            if (is_method("ACK")) { t_relay(); exit; }
            t_relay();
            exit;
        }
        if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
        sl_send_reply(404, "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("INVITE")) record_route();
    $avp(caller) = $fU;
    if (is_present_hf("X-Fork")) {
        $var(second) = $hdr(X-Fork);
        append_branch("$var(second)");
    }
    if (is_present_hf("X-Next")) t_on_failure("next");
    if (is_present_hf("X-Stateless")) { forward(); exit; }
    t_on_reply("seen");
    t_on_branch("per_branch");
    if (!t_relay()) sl_reply_error();
}

onreply_route {
    xlog("L_INFO", "global onreply_route $rs\n");
}

onreply_route[seen] {
    xlog("L_INFO", "onreply_route[seen] $rs $rr branch $T_branch_idx from $avp(caller)\n");
}

branch_route[per_branch] {
    xlog("L_INFO", "branch_route[per_branch] $ru idx $T_branch_idx\n");
    if ($rU == "dropme") drop;
}

failure_route[next] {
    xlog("L_INFO", "failure_route[next] code $T_reply_code from $avp(caller)\n");
    if (t_was_cancelled()) exit;
    if (t_check_status("486|408")) {
        $ru = $hdr(X-Next);
        t_on_failure("last");
        t_relay();
        exit;
    }
}

failure_route[last] {
    xlog("L_INFO", "failure_route[last] code $T_reply_code\n");
    t_reply(480, "Tried Them All");
}
"""


@dataclass
class Proxy:
    """`tls_port`/`pki`: the proxy's TLS socket and the certificates its clients trust (None: no TLS);
    `ws_ports`: its ws and wss sockets ({} : none)."""

    server: RunningServer
    port: int
    proto: str
    tls_port: int | None = None
    pki: TestPki | None = None
    ws_ports: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        if self.proto == "tls" and self.tls_port:
            return ("127.0.0.1", self.tls_port)
        return ("127.0.0.1", self.ws_ports.get(self.proto, self.port))


def tls_lines(tls_port: int, pki: TestPki, ws_ports: dict[str, int] | None = None) -> tuple[str, str]:
    """(the socket lines, the module lines) of a TLS socket on `tls_port` with `pki`'s server certificate
    (clients need none) and a client domain trusting its CA; with `ws_ports`, ws and wss sockets too."""
    modules = (f'loadmodule "tls_mgm.so"\nloadmodule "proto_tls.so"\n'
               f'modparam("tls_mgm", "certificate", "{pki.server}")\n'
               f'modparam("tls_mgm", "private_key", "{pki.server}")\n'
               f'modparam("tls_mgm", "ca_list", "{pki.ca}")\n'
               f'modparam("tls_mgm", "require_cert", "0")\n'
               f'modparam("proto_tls", "tls_handshake_timeout", 2000)\n')
    sockets = f"socket = tls:127.0.0.1:{tls_port}\n"
    for proto, port in (ws_ports or {}).items():
        sockets += f"socket = {proto}:127.0.0.1:{port}\n"
        modules += f'loadmodule "proto_{proto}.so"\n'
    if ws_ports and "wss" in ws_ports:
        modules += 'modparam("proto_wss", "wss_tls_handshake_timeout", 2000)\n'
    return sockets, modules


def write_cfg(tmp_path: Path, port: int, workers: int, script: str = PROXY_SCRIPT, *,
              tls: tuple[int, TestPki] | None = None, ws_ports: dict[str, int] | None = None) -> Path:
    """The script with its port and workers; `tls` (port, certificates) adds a TLS socket, and
    `ws_ports` ws/wss sockets beside it."""
    text = script.replace("WORKERS", str(workers)).replace("PORT", str(port))
    if tls is not None:
        socket, modules = tls_lines(*tls, ws_ports)
        first_load = text.index("loadmodule")
        text = socket + text[:first_load] + modules + text[first_load:]
    cfg = tmp_path / "proxy.cfg"
    cfg.write_text(text)
    return cfg


@asynccontextmanager
async def uas(proto: str, proxy: Proxy, user: str, count: int = 1) -> AsyncIterator[list[SipTestClient]]:
    secure = proto in ("tls", "wss") and proxy.pki is not None
    tls_context = proxy.pki.client_context() if secure and proxy.pki is not None else None
    address = Proxy(proxy.server, proxy.port, proto, proxy.tls_port, proxy.pki, proxy.ws_ports).address
    clients = [await SipTestClient.start(proto, address, user=f"{user}{i or ''}", timeout=3.0,
                                         tls_context=tls_context) for i in range(count)]
    if proto != "udp":
        # A TCP/TLS/WebSocket UA is reachable only over the connection it opened: wait until the proxy has
        # it (a request answered on it), as a phone's REGISTER would.
        for client in clients:
            probe = client.options()
            probe.set_header("Max-Forwards", "0")
            await client.send_request(probe)
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


def target(callee: SipTestClient) -> str:
    """The Request-URI that reaches `callee` directly (its own address)."""
    suffix = "" if callee.proto == "udp" else f";transport={callee.proto}"
    return f"sip:{callee.user}@{callee.hostport}{suffix}"


__all__ = ["PROXY_SCRIPT", "Proxy", "TestPki", "free_port", "start", "target", "tls_lines", "uas",
           "write_cfg"]
