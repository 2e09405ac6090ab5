"""QueueDelayProbe: the age of our own datagrams when the listening socket reads them back."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from routescript.transport.probe import QueueDelayProbe


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


class Clock:
    """The probe's clock, set by hand."""

    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def probe(listener: socket.socket, clock: Clock) -> Iterator[QueueDelayProbe]:
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1], clock=clock)
    yield probe
    probe.close()


def test_delay_is_the_age_of_the_probe_read_back(listener: socket.socket, probe: QueueDelayProbe,
                                                 clock: Clock) -> None:
    clock.now = 100.0
    probe.send()
    data, addr = listener.recvfrom(2048)
    assert probe.is_probe(addr[0], addr[1]) and not probe.is_probe(addr[0], addr[1] + 1)
    clock.now = 100.4                              # read 400 ms after it was sent
    assert probe.delay(clock.now) == pytest.approx(0.4)   # still in flight: its age
    probe.received(data)
    assert probe.last_delay == pytest.approx(0.4)
    clock.now = 101.0                              # nothing outstanding: the last figure stands
    assert probe.delay(clock.now) == pytest.approx(0.4)
    probe.send()
    probe.received(listener.recvfrom(2048)[0])  # read back at once: the buffer drained
    assert probe.delay(clock.now) == 0.0


def test_a_filling_buffer_shows_before_any_probe_returns(probe: QueueDelayProbe, clock: Clock) -> None:
    probe.send()
    clock.now = 10.1
    probe.send()
    clock.now = 12.0                               # neither read yet: the oldest is 2 s old
    assert probe.delay(clock.now) == pytest.approx(2.0)


def test_a_dropped_probe_is_forgotten_when_a_later_one_returns(listener: socket.socket,
                                                               probe: QueueDelayProbe,
                                                               clock: Clock) -> None:
    probe.send()
    listener.recvfrom(2048)                     # this one "lost": never handed to the probe
    clock.now = 10.1
    probe.send()
    second = listener.recvfrom(2048)[0]
    clock.now = 10.15
    probe.received(second)
    assert probe.last_delay == pytest.approx(0.05)
    assert probe.delay(clock.now) == pytest.approx(0.05)   # the lost one no longer ages


def test_anything_else_from_the_probe_port_is_ignored(probe: QueueDelayProbe, clock: Clock) -> None:
    probe.received(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    probe.received(b"\x00rs-queue-probe\x00short")
    assert probe.last_delay == 0.0 and probe.delay(clock.now) == 0.0


def test_a_wildcard_listener_is_probed_on_loopback() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(2)
    probe = QueueDelayProbe("0.0.0.0", sock.getsockname()[1])
    try:
        assert probe.host == "127.0.0.1"
        probe.send()
        _, addr = sock.recvfrom(2048)
        assert probe.is_probe(addr[0], addr[1])
    finally:
        probe.close()
        sock.close()


def test_workers_sharing_a_socket_share_what_their_probes_read_back(listener: socket.socket,
                                                                    clock: Clock) -> None:
    """Two workers read one inherited socket: a worker whose own probes the other one read must not take
    the buffer for full (it answered 503 'overloaded' to requests that had waited nothing)."""
    from routescript.transport import probe as probe_module

    port = listener.getsockname()[1]
    drain = probe_module.share_drain("127.0.0.1", port)   # the supervisor, before fork
    try:
        busy = QueueDelayProbe("127.0.0.1", port, clock=clock)
        reader = QueueDelayProbe("127.0.0.1", port, clock=clock)
        clock.now = 200.0
        busy.send()                                  # the busy worker's probe ...
        clock.now = 200.05
        reader.send()
        first, second = listener.recvfrom(2048)[0], listener.recvfrom(2048)[0]
        clock.now = 200.06
        reader.received(first)                       # ... read back by its sibling, as is the next one
        reader.received(second)
        clock.now = 200.5                            # 500 ms after its probe went: not outstanding
        assert busy.delay(clock.now) == pytest.approx(0.01)   # the newest probe read back, by anyone
        assert drain.read() == (pytest.approx(200.05), pytest.approx(0.01))
        # an older probe read late by a worker does not replace the newer figure
        reader.received(first)
        assert drain.read()[0] == pytest.approx(200.05) and reader.last_delay == pytest.approx(0.01)
        # and a buffer nobody drains still shows: the busy worker's next probe ages
        busy.send()
        clock.now = 200.9
        assert busy.delay(clock.now) == pytest.approx(0.4)
    finally:
        busy.close()
        reader.close()
        probe_module._DRAINS.pop(("127.0.0.1", port), None)
