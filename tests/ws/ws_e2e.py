"""The WebSocket suites' shared parts: examples/webrtc-presence.cfg started on free loopback ports, and a
call between two of routescript.testing's user agents through it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import ROOT, RunningServer, free_port, start

from routescript.sip import SIPRequest, SIPResponse
from routescript.testing import SipTestClient
from routescript.testing.client import Dialog

EXAMPLE = ROOT / "examples" / "webrtc-presence.cfg"
PAGE_ORIGIN = "http://127.0.0.1:8000"   # one of the example's allowed_origins


@dataclass
class WebrtcServer:
    server: RunningServer
    sip_port: int     # udp and tcp
    ws_port: int

    @property
    def udp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def ws(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ws_port)


def example_script(tmp: Path, sip_port: int, ws_port: int, *, origins: str | None = None,
                   extra: str = "") -> Path:
    """The example with our ports, a database under `tmp`, and `origins` as allowed_origins."""
    text = EXAMPLE.read_text()
    text = text.replace(":5060", f":{sip_port}").replace("ws:127.0.0.1:8080", f"ws:127.0.0.1:{ws_port}")
    text = text.replace("/tmp/routescript-webrtc.sqlite", str(tmp / "webrtc.sqlite"))
    if origins is not None:
        text = text.replace('"http://127.0.0.1:8000, http://localhost:8000"', f'"{origins}"')
    cfg = tmp / "webrtc.cfg"
    cfg.write_text(text + extra)
    return cfg


@contextmanager
def webrtc_server(tmp: Path, *, origins: str | None = None, extra: str = "") -> Iterator[WebrtcServer]:
    sip_port, ws_port = free_port(), free_port()
    server = start(example_script(tmp, sip_port, ws_port, origins=origins, extra=extra), tmp)
    try:
        yield WebrtcServer(server, sip_port, ws_port)
    finally:
        server.stop()


async def register(client: SipTestClient) -> SIPResponse:
    reg = client.request("REGISTER", client.server_uri, to=client.aor, headers=[("Expires", "600")])
    resp = await client.send_request(reg)
    assert resp.status == 200
    return resp


def callee_dialog(invite: SIPRequest, ok: SIPResponse) -> Dialog:
    """The callee's side of the call (RFC 3261 12.1.1): route set = Record-Route in order."""
    return Dialog(call_id=invite.call_id, local_tag=ok.to.tag or "", remote_tag=invite.from_.tag,
                  local_uri=str(invite.to.uri), remote_uri=str(invite.from_.uri),
                  remote_target=str(invite.contacts[0].uri), route_set=[str(r) for r in invite.record_routes],
                  local_cseq=100)


@dataclass
class Call:
    invite: SIPRequest        # as the callee saw it
    ok: SIPResponse           # the 200 as the caller saw it
    ack: SIPRequest           # as the callee saw it
    bye: SIPRequest           # as the hanging-up side's peer saw it

    @property
    def routes(self) -> list[str]:
        return [str(r) for r in self.invite.record_routes]


async def call(caller: SipTestClient, callee: SipTestClient, *, caller_hangs_up: bool = False) -> Call:
    """caller calls callee through the proxy; callee answers 200; caller ACKs; one side hangs up (the
    callee unless `caller_hangs_up`): its BYE goes along the route set and the other side answers it."""
    invite = caller.request("INVITE", callee.aor, body=b"v=0\r\n", content_type="application/sdp")
    caller.send(invite)
    seen = await callee.expect_request("INVITE", call_id=invite.call_id)
    contact = ("Contact", f"<{callee.contact_uri}>")
    rr = [("Record-Route", value) for value in seen.header_all("Record-Route")]
    ok = await callee.reply(seen, 200, headers=[contact, *rr])
    final = await caller.expect_response(invite, final=True)
    assert final.status == 200
    caller_dialog = caller.dialog(invite, final)
    caller.send(caller.request("ACK", dialog=caller_dialog, cseq=invite.cseq.number))
    ack = await callee.expect_request("ACK", call_id=invite.call_id)
    if caller_hangs_up:
        side, peer, dialog = caller, callee, caller_dialog
    else:
        side, peer, dialog = callee, caller, callee_dialog(seen, ok)
    bye = side.request("BYE", dialog=dialog)
    side.send(bye)
    got = await peer.expect_request("BYE", call_id=invite.call_id)
    await peer.reply(got, 200)
    assert (await side.expect_response(bye, final=True)).status == 200
    return Call(seen, final, ack, got)
