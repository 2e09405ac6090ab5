"""A TransportLayer on loopback with a stub core that records messages and answers requests 200."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from routescript.sip import build_reply
from routescript.transport import TransportLayer


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass
class StubCore:
    """Records (msg, source); answers requests 200 (or `status`) unless `answer` is False."""

    layer: Any = None
    received: list[tuple[Any, Any]] = field(default_factory=list)
    answer: bool = True
    status: int = 200
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, msg: Any, source: Any) -> None:
        self.received.append((msg, source))
        self.arrived.set()
        if msg.is_request and self.answer and msg.method != "ACK":
            self.layer.send_reply(build_reply(msg, self.status), source)

    async def wait_for(self, count: int, timeout: float = 2.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received) < count:
            self.arrived.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"expected {count} messages, got {len(self.received)}"
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str, *, among: str,
                      timeout: float = 3.0) -> str:
    """The first log line holding both `among` (the kind of line: "closing TLS connection") and `text`,
    waited for up to `timeout` seconds; AssertionError listing what was logged otherwise."""
    for _ in range(int(timeout / 0.02)):
        lines = [r.getMessage() for r in caplog.records if among in r.getMessage() and text in r.getMessage()]
        if lines:
            return lines[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {text!r}: {[r.getMessage() for r in caplog.records]}")


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.fixture
async def core() -> AsyncIterator[StubCore]:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, max_message_size=4096, tcp_idle_timeout=30.0)
    yield stub
    await stub.layer.close()



def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Every async transport test runs on asyncio's loop and on uvloop (the core's choice)."""
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
