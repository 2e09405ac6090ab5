"""The in-process world: the script loaded by the real loader (with the file's modparams in place of
the script's), started on a SimulatedNetwork, on a VirtualClockLoop; its xlog and log lines
captured; the script lines traced.

    sim = Simulation(scenario_file, loop)
    await sim.start()          # LoadError (the script's own diagnostics) when it does not load
    await run_steps(sim, scenario)
    await sim.stop()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from routescript.core.loader import ModParam
from routescript.core.log import py_level
from routescript.core.server import Server
from routescript.script.pos import Pos

from ..virtual_clock import VirtualClockLoop
from .engine import World
from .model import ScenarioFile, UASpec
from .network import SimulatedNetwork
from .trace import ScriptTrace
from .ua import UserAgent

# In-process UAs without an address get 127.0.0.1 and a port from here on (never a server socket's).
FIRST_UA_PORT = 5101


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Simulation(World):
    """One scenario's server, network and UAs, in this process (module docstring)."""

    def __init__(self, file: ScenarioFile, loop: VirtualClockLoop, *, echo_log: bool = False) -> None:
        self.file = file
        self.loop = loop
        self.server = Server()
        self.network = SimulatedNetwork(loop)
        self.uas: dict[str, UserAgent] = {}
        self.trace: ScriptTrace | None = None
        self._since_send: list[Pos] = []
        self._capture = _Capture()
        self._echo_log = echo_log
        self._saved_levels: list[tuple[logging.Logger, int, bool]] = []
        self._started = False
        self._server_host = "127.0.0.1"
        self._taken: set[tuple[str, int]] = set()

    # --- life -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the script with the file's modparams (LoadError with the script's diagnostics)."""
        overrides = [ModParam(module, param, value, (pos.file, pos.line, pos.col))
                     for module, param, value, pos in self.file.modparams]
        self.server.load(self.file.script, overrides)

    async def start(self) -> None:
        if self.server.loaded is None:
            self.load()
        self._capture_logs()
        await self.server.start_simulated(self.network.make_transport)
        self._started = True
        server_host = self.server.sockets[0].host if self.server.sockets else "127.0.0.1"
        self._watch_databases()
        await self._add_subscribers()
        self._server_host = server_host
        self._taken = {(s.host, s.port) for s in self.server.sockets}
        self._taken |= {(u.host, u.port) for u in self.file.uas.values() if u.port}
        for name in self._ua_names():
            self.add_ua(self.file.uas.get(name) or UASpec(name))
        assert self.server.script is not None and self.server.loaded is not None
        self.trace = ScriptTrace(self.server.script, list(self.server.loaded.ast.routes))
        self.trace.start()
        await self.loop.settle()

    async def stop(self) -> None:
        if self.trace is not None:
            self.trace.stop()
        try:
            if self._started:
                await self.server.stop()
                # what the stop left running (a dialog's last publication) logs into the capture too,
                # not onto the report
                await self.loop.settle()
        finally:
            self._restore_logs()

    def add_ua(self, spec: UASpec) -> None:
        """A UA on the network: its address, or 127.0.0.1 and the next port no one has."""
        if not spec.port:
            port = FIRST_UA_PORT
            while (spec.host, port) in self._taken:
                port += 1
            spec = UASpec(spec.name, spec.uri, spec.host, port, spec.transport, spec.answers, spec.pos)
        self._taken.add((spec.host, spec.port))
        ua = UserAgent(spec, self.network, self._server_host)
        self.network.add(ua)
        self.uas[spec.name] = ua

    def _ua_names(self) -> list[str]:
        from .model import AnswerStep, Expect, Send

        names = list(self.file.uas)
        for scenario in self.file.scenarios:
            for step in scenario.steps:
                name = step.ua if isinstance(step, (Send, Expect, AnswerStep)) else None
                if name and name not in names:
                    names.append(name)
        return names

    # --- logs -----------------------------------------------------------------------------------

    def _capture_logs(self) -> None:
        """Every routescript log line is kept for `log` steps, at the script's log_level and
        xlog_level (what the real server would write), instead of being printed."""
        cfg = self.server.config
        root = logging.getLogger("routescript")
        xlog = logging.getLogger("routescript.xlog")
        self._saved_levels = [(root, root.level, root.propagate), (xlog, xlog.level, xlog.propagate)]
        root.setLevel(py_level(cfg.log_level))
        xlog.setLevel(py_level(cfg.xlog_level))
        root.addHandler(self._capture)
        if not self._echo_log:
            root.propagate = False

    def _restore_logs(self) -> None:
        root = logging.getLogger("routescript")
        root.removeHandler(self._capture)
        for logger, level, propagate in self._saved_levels:
            logger.setLevel(level)
            logger.propagate = propagate
        self._saved_levels = []

    def log_records(self) -> list[logging.LogRecord]:
        return self._capture.records

    # --- the clock ------------------------------------------------------------------------------

    async def settle(self) -> None:
        await self.loop.settle()
        self._collect_trace()

    async def advance(self, seconds: float) -> None:
        await self.loop.advance(seconds)
        self._collect_trace()

    def _collect_trace(self) -> None:
        if self.trace is not None:
            self._since_send += self.trace.take()

    def mark_send(self) -> None:
        self._collect_trace()
        self._since_send = []

    def ran_since_send(self) -> list[Pos]:
        self._collect_trace()
        return self._since_send

    def route_labels(self, positions: list[Pos]) -> set[str]:
        if self.trace is None or not self.trace.available:
            from .engine import NotRunnable

            raise NotRunnable("routes (another tracer, such as coverage, holds sys.settrace)")
        return {label for p in positions if (label := self.trace.route_of(p)) is not None}

    def describe_lines(self, positions: list[Pos]) -> list[str]:
        out: list[str] = []
        texts: dict[str, list[str]] = {}
        for p in positions[-40:]:
            if p.file not in texts:
                try:
                    texts[p.file] = Path(p.file).read_text(encoding="utf-8").splitlines()
                except OSError:
                    texts[p.file] = []
            lines = texts[p.file]
            text = lines[p.line - 1].strip() if 0 < p.line <= len(lines) else ""
            out.append(f"{Path(p.file).name}:{p.line}: {text}")
        if len(positions) > 40:
            out.insert(0, f"... ({len(positions) - 40} earlier lines)")
        return out

    def lost(self) -> list[str]:
        return [f"{dest.proto}:{dest.host}:{dest.port}: {_first_line(data)}"
                for dest, data in self.network.lost]

    def server_uri(self) -> str:
        s = self.server.sockets[0] if self.server.sockets else None
        return f"sip:{s.host}:{s.port}" if s is not None else ""

    # --- databases and MI -----------------------------------------------------------------------

    def _watch_databases(self) -> None:
        """aiosqlite works in its own thread: every call it makes is marked as outside work, so the
        clock stands still and settle() waits until the answer is back (virtual_clock.py)."""
        databases = self.server.databases
        for db in list(databases._open.values()):
            self._watch(db)
        opened = databases.get

        async def get(url: str) -> Any:
            db = await opened(url)
            self._watch(db)
            return db

        databases.get = get   # type: ignore[method-assign]

    def _watch(self, db: Any) -> None:
        conn = getattr(db, "_conn", None)
        execute = getattr(conn, "_execute", None)
        if conn is None or execute is None or getattr(execute, "_rs_watched", False):
            return
        loop = self.loop

        async def watched(fn: Any, *args: Any, **kwargs: Any) -> Any:
            with loop.outside_work():
                return await execute(fn, *args, **kwargs)

        watched._rs_watched = True   # type: ignore[attr-defined]
        conn._execute = watched

    async def _add_subscribers(self) -> None:
        """The file's `subscribers:` in auth_db's subscriber table, as `routescript db subscriber add`
        writes them (through the server's own handle: a :memory: database is the server's)."""
        if not self.file.subscribers:
            return
        from routescript.modules.auth_db.subscribers import TABLE, Account, hashes

        url = self._db_url("auth_db")
        db = await self.server.database(url)
        await db.ensure_schema([TABLE])
        for account, password in self.file.subscribers.items():
            acct = Account.parse(account)
            row = {"username": acct.username, "domain": acct.domain, **hashes(acct, password)}
            await db.insert(TABLE, row)

    async def db_rows(self, url: str | None, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        url = url or self._db_url()
        db = await self.server.database(url)
        return [dict(r) for r in await db.query(table, where)]

    def _db_url(self, module: str | None = None) -> str:
        loaded = self.server.loaded
        assert loaded is not None
        for mp in reversed(loaded.modparams):
            if mp.param == "db_url" and module in (None, mp.module):
                return str(mp.value)
        which = f"{module} " if module else ""
        raise ValueError(f"the script sets no {which}db_url: give `url:` in the db step")

    async def mi(self, command: str, params: Any) -> Any:
        from routescript.mi import mi_registry

        return await mi_registry(self.server).dispatch(command, params)


def _first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
