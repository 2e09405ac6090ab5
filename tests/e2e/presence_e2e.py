"""Helpers for the presence end-to-end tests: examples/presence.cfg copied to a temp dir with a free
port, a temp database and short timers, run with `routescript run`. The database is the back end the
test runs on (fixtures `presence_db` / `module_presence_db` of tests/conftest.py: SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from rs_e2e import ROOT, RunningServer, free_port, run_server, start

from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki

EXAMPLE = ROOT / "examples" / "presence.cfg"


def presence_cfg(tmp_path: Path, port: int, *, db: Path | None = None, db_url: str | None = None,
                 presence: dict[str, object] | None = None,
                 presence_xml: dict[str, object] | None = None, tm: dict[str, object] | None = None,
                 name: str = "presence.cfg", example: Path = EXAMPLE,
                 modparams: dict[str, dict[str, object]] | None = None, http_port: int | None = None,
                 workers: int = 1, affinity: str | None = None,
                 secure: SecureListeners | None = None) -> Path:
    """The example (examples/presence.cfg unless `example` names another) with our port, database file
    and modparam overrides (a param the example does not set is added after the others of its module,
    or after the last modparam). Every db_url of the example points at the test database: `db_url` (a
    TestDb's url, tests/conftest.py), else the SQLite file `db` (default tmp_path/presence.sqlite). The
    example's MI port (httpd) becomes `http_port`, else a free port. `workers` > 1 runs that many
    worker processes (udp_workers; `affinity` sets worker_affinity, docs/workers.md). `secure`: tls, ws
    and wss sockets too (SecureListeners)."""
    text = example.read_text().replace(":5060", f":{port}")
    if secure is not None:
        text = secure.script_lines() + text
    if workers > 1:
        text = f"udp_workers = {workers}\n" + (f'worker_affinity = "{affinity}"\n' if affinity else "") + text
    text = re.sub(r'(modparam\("httpd", "port", )\d+\)',
                  lambda m: f"{m.group(1)}{http_port or free_port()})", text)
    url = db_url or f"sqlite://{db or tmp_path / 'presence.sqlite'}"
    text = re.sub(r'modparam\("(\w+)", "db_url", "[^"]*"\)',
                  lambda m: f'modparam("{m.group(1)}", "db_url", "{url}")', text)
    todo = [("presence", presence or {}), ("presence_xml", presence_xml or {}), ("tm", tm or {})]
    todo += list((modparams or {}).items())
    for module, values in todo:
        for param, value in values.items():
            lit = f'"{value}"' if isinstance(value, str) else str(value)
            line = f'modparam("{module}", "{param}", {lit})'
            pattern = re.compile(rf'modparam\("{module}", "{param}", [^)]*\)')
            if pattern.search(text):
                text = pattern.sub(line.replace("\\", "\\\\"), text)
            else:
                ends = [m.end() for m in re.finditer(rf'modparam\("{module}", [^\n]*\n', text)] or \
                    [m.end() for m in re.finditer(r'modparam\([^\n]*\n', text)]
                last = ends[-1]
                text = text[:last] + line + "\n" + text[last:]
    cfg = tmp_path / name
    cfg.write_text(text)
    return cfg


@dataclass(frozen=True)
class SecureListeners:
    """tls, ws and wss sockets on free ports beside an example's udp/tcp ones, with the test PKI's server
    certificate (tls_mgm server domain "srv", any address; a client's certificate checked when sent)."""

    pki: TestPki
    ports: dict[str, int]

    @classmethod
    def make(cls, tmp: Path) -> SecureListeners:
        pki_dir = tmp / "pki"
        pki_dir.mkdir(exist_ok=True)
        return cls(TestPki.make(pki_dir), {proto: free_port() for proto in ("tls", "ws", "wss")})

    def script_lines(self) -> str:
        """Global lines put before the example's (socket=, loadmodule and modparam may come anywhere at
        the top level)."""
        sockets = "".join(f"socket = {proto}:127.0.0.1:{port}\n" for proto, port in self.ports.items())
        return (sockets + 'loadmodule "tls_mgm.so"\nloadmodule "proto_tls.so"\nloadmodule "proto_ws.so"\n'
                'loadmodule "proto_wss.so"\n'
                'modparam("tls_mgm", "server_domain", "srv")\n'
                f'modparam("tls_mgm", "certificate", "[srv]{self.pki.server}")\n'
                f'modparam("tls_mgm", "private_key", "[srv]{self.pki.server}")\n'
                f'modparam("tls_mgm", "ca_list", "[srv]{self.pki.ca}")\n'
                'modparam("tls_mgm", "require_cert", "[srv]0")\n')


# Every transport a suite's representative scenarios run over (SecureListeners adds the last three).
ALL_PROTOS = ["udp", "tcp", "tls", "ws", "wss"]


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def workers(request: pytest.FixtureRequest) -> int:
    """A suite's server as one process and with two worker processes (udp_workers, docs/workers.md)."""
    return int(request.param)


class Srv:
    """A `routescript run` under test on loopback `port`: request URIs on it and SIP test clients for it.
    A test module subclasses it for its own helpers (database rows, MI calls)."""

    domain = "127.0.0.1"  # host part of uri() when none is given
    answer_notify = False  # clients answer every NOTIFY 200 on their own (tests that only read bodies)

    def __init__(self, server: RunningServer, port: int, secure: SecureListeners | None = None) -> None:
        self.server, self.port, self.secure = server, port, secure

    def uri(self, user: str, host: str | None = None) -> str:
        """sip:user@host:port - always the server's port, whatever host names the domain."""
        return f"sip:{user}@{host or self.domain}:{self.port}"

    async def client(self, user: str = "tester", proto: str = "udp") -> SipTestClient:
        """A client over `proto`: udp and tcp on the example's port; tls, ws and wss on the secure
        listeners' (the server started with `secure`), with the test PKI's client certificate."""
        port, context = self.port, None
        if proto in ("tls", "ws", "wss"):
            assert self.secure is not None, f"this server was started without {proto} listeners (secure=)"
            port = self.secure.ports[proto]
            if proto != "ws":
                context = self.secure.pki.client_context(self.secure.pki.client)
        client = await SipTestClient.start(proto, ("127.0.0.1", port), user=user, timeout=3,
                                           tls_context=context)
        if self.answer_notify:
            client.auto_reply["NOTIFY"] = 200
        return client


__all__ = ["ALL_PROTOS", "presence_cfg", "start", "run_server", "SecureListeners", "Srv", "free_port",
           "RunningServer", "ROOT", "workers"]
