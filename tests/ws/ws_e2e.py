"""The WebSocket suites' shared parts: examples/webrtc-presence.cfg started on free loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import ROOT, RunningServer, free_port, start

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
