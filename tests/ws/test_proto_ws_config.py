"""Load-time checks of ws sockets and proto_ws's parameters (`routescript check`): refused with a
message at the line, never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from ws_e2e import EXAMPLE

from rs_e2e import routescript  # tests/e2e, which ws_e2e put on the path

BASE = """socket = udp:127.0.0.1:5060
socket = ws:127.0.0.1{port}
{extra}
loadmodule "sl.so"
route {{ sl_send_reply(200, "OK"); }}
"""


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    cfg = tmp_path / "t.cfg"
    cfg.write_text(text)
    done = routescript("check", str(cfg))
    return done.returncode, done.stdout + done.stderr


def test_the_example_loads(tmp_path: Path) -> None:
    code, out = check(tmp_path, EXAMPLE.read_text())
    assert code == 0, out


def test_a_ws_socket_needs_proto_ws(tmp_path: Path) -> None:
    code, out = check(tmp_path, BASE.format(port=":8080", extra=""))
    assert code != 0
    assert 't.cfg:2:' in out and 'loadmodule "proto_ws.so"' in out


def test_a_ws_socket_without_port_listens_on_80(tmp_path: Path) -> None:
    code, out = check(tmp_path, BASE.format(port="", extra='loadmodule "proto_ws.so"'))
    assert code == 0, out


def test_ws_with_worker_processes_loads(tmp_path: Path) -> None:
    """A WebSocket connection lives in the worker that accepted it, as a TCP one (docs/workers.md 4)."""
    code, out = check(tmp_path, BASE.format(port=":8080", extra='udp_workers = 2\nloadmodule "proto_ws.so"'))
    assert code == 0, out


@pytest.mark.parametrize("param, value, says", [
    ("ws_port", "8080", "write the port on the socket line"),
    ("ws_resource", '"/sip"', "never opens one"),
    ("trace_on", "1", "no tracing"),
    ("allowed_origins", '"https://a.example/path"', "is not an origin"),
    ("ws_max_msg_chunks", "0", "at least 1"),
])
def test_refused_parameters(tmp_path: Path, param: str, value: str, says: str) -> None:
    extra = f'loadmodule "proto_ws.so"\nmodparam("proto_ws", "{param}", {value})'
    code, out = check(tmp_path, BASE.format(port=":8080", extra=extra))
    assert code != 0
    assert says in out


def test_accepted_parameters(tmp_path: Path) -> None:
    extra = ('loadmodule "proto_ws.so"\nmodparam("proto_ws", "allowed_origins", "https://a.example, '
             'http://127.0.0.1:8000")\nmodparam("proto_ws", "require_origin", 0)\n'
             'modparam("proto_ws", "ws_send_timeout", 200)\nmodparam("proto_ws", "ws_handshake_timeout", 0)')
    code, out = check(tmp_path, BASE.format(port=":8080", extra=extra))
    assert code == 0, out
