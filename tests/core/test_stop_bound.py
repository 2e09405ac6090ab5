"""A stop is bounded whatever a module does: a module whose stop() never returns is abandoned after
shutdown_timeout, and what comes after it in the closing order (the SIP sockets, the databases and their
threads) is still closed - the module's own database too, without waiting - so the process can exit;
what was abandoned is logged."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import routescript.core.loader as loader
from routescript.core.module import Module
from routescript.core.server import Server
from routescript.db import open_database

SCRIPT = """
log_level = 3
shutdown_timeout = 1
socket = udp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "neverstops.so"
route { exit; }
"""


class NeverStops(Module):
    """Uses a database of the server's and never returns from stop() (a drain waiting for ever)."""

    name = "neverstops"
    db_url: ClassVar[str] = ""
    db: ClassVar[Any] = None
    own: ClassVar[Any] = None

    async def start(self) -> None:
        NeverStops.db = await self.server.database(NeverStops.db_url)
        # one of its own too (as presence with renamed tables): only its stop() would close it
        NeverStops.own = await open_database(NeverStops.db_url.replace("n.sqlite", "own.sqlite"))

    async def stop(self) -> None:
        await asyncio.Event().wait()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def db_threads() -> list[threading.Thread]:
    """aiosqlite's connection threads (not daemons: a live one keeps the interpreter from exiting)."""
    return [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
            and "_connection_worker_thread" in repr(getattr(t, "_target", None))]


@pytest.mark.asyncio
async def test_a_module_whose_stop_never_returns_is_abandoned_and_the_rest_still_closes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader.find_module_class
    monkeypatch.setattr(loader, "find_module_class", lambda n: NeverStops if n == "neverstops" else real(n))
    NeverStops.db_url = f"sqlite://{tmp_path}/n.sqlite"
    before = set(db_threads())
    cfg = tmp_path / "s.cfg"
    cfg.write_text(SCRIPT)
    server = Server()
    server.load(str(cfg))
    await server.start()
    assert len(set(db_threads()) - before) == 2, "the databases' threads run"
    seen = Collect()
    logging.getLogger("routescript").addHandler(seen)
    try:
        t0 = time.monotonic()
        clean = await asyncio.wait_for(server.stop(), 5)
        took = time.monotonic() - t0
    finally:
        logging.getLogger("routescript").removeHandler(seen)
    assert clean is False and 1.0 <= took < 3.5
    assert any("module neverstops" in line and "abandoned" in line for line in seen.lines), seen.lines
    for _ in range(100):   # the database's thread ends once its close reached it
        if not set(db_threads()) - before:
            break
        await asyncio.sleep(0.01)
    assert not set(db_threads()) - before, "a database was left open: its thread would block the exit"
    assert any("databases left open" in line and "own.sqlite" in line for line in seen.lines), seen.lines


CHILD = """
import asyncio, sys, threading
import routescript.core.loader as loader
from routescript.core.module import Module
from routescript.cli import cmd_run

class Stuck(Module):
    name = "stuck"

    async def start(self):
        # a thread that never ends (a database's blocked in a lock): the interpreter joins it at exit
        threading.Thread(target=threading.Event().wait, name="stuck-for-ever").start()

    async def stop(self):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()   # and ignores its cancellation

real = loader.find_module_class
loader.find_module_class = lambda n: Stuck if n == "stuck" else real(n)
sys.exit(cmd_run(sys.argv[1]))
"""


def test_routescript_run_ends_after_a_stop_it_had_to_abandon(tmp_path: Path) -> None:
    """`routescript run`, one process, SIGTERM: a module whose stop() never returns, ignores its
    cancellation and left a thread that never ends. The process still exits 1 within the stop's bound,
    having said what it abandoned and what was left running."""
    import os
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "s.cfg"
    cfg.write_text(SCRIPT.replace("neverstops", "stuck").replace("udp:127.0.0.1:0", "udp:127.0.0.1:0\n"
                                                                 "log_stderror = yes"))
    log = tmp_path / "log"
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg)], stdout=out,
                                 stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 20
            while b"routescript started" not in log.read_bytes():
                assert child.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            t0 = time.monotonic()
            child.send_signal(signal.SIGTERM)
            rc = child.wait(timeout=15)
            took = time.monotonic() - t0
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
    text = log.read_text()
    assert rc == 1 and took < 8, (rc, took, text)
    assert "closing module stuck took more than" in text and "stuck-for-ever" in text, text
