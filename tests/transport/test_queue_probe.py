"""QueueDelayProbe: the age of our own datagrams when the listening socket reads them back."""

from __future__ import annotations

import socket

import pytest

from routescript.transport.probe import QueueDelayProbe


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def test_delay_is_the_age_of_the_probe_read_back(listener: socket.socket) -> None:
    now = [100.0]
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1], clock=lambda: now[0])
    try:
        probe.send()
        data, addr = listener.recvfrom(2048)
        assert probe.is_probe(addr[0], addr[1]) and not probe.is_probe(addr[0], addr[1] + 1)
        now[0] = 100.4                              # read 400 ms after it was sent
        assert probe.delay(now[0]) == pytest.approx(0.4)   # still in flight: its age
        probe.received(data)
        assert probe.last_delay == pytest.approx(0.4)
        now[0] = 101.0                              # nothing outstanding: the last figure stands
        assert probe.delay(now[0]) == pytest.approx(0.4)
        probe.send()
        probe.received(listener.recvfrom(2048)[0])  # read back at once: the buffer drained
        assert probe.delay(now[0]) == 0.0
    finally:
        probe.close()


def test_a_filling_buffer_shows_before_any_probe_returns(listener: socket.socket) -> None:
    now = [10.0]
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1], clock=lambda: now[0])
    try:
        probe.send()
        now[0] = 10.1
        probe.send()
        now[0] = 12.0                               # neither read yet: the oldest is 2 s old
        assert probe.delay(now[0]) == pytest.approx(2.0)
    finally:
        probe.close()


def test_a_dropped_probe_is_forgotten_when_a_later_one_returns(listener: socket.socket) -> None:
    now = [10.0]
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1], clock=lambda: now[0])
    try:
        probe.send()
        listener.recvfrom(2048)                     # this one "lost": never handed to the probe
        now[0] = 10.1
        probe.send()
        second = listener.recvfrom(2048)[0]
        now[0] = 10.15
        probe.received(second)
        assert probe.last_delay == pytest.approx(0.05)
        assert probe.delay(now[0]) == pytest.approx(0.05)   # the lost one no longer ages
    finally:
        probe.close()


def test_anything_else_from_the_probe_port_is_ignored(listener: socket.socket) -> None:
    now = [10.0]
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1], clock=lambda: now[0])
    try:
        probe.received(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        probe.received(b"\x00rs-queue-probe\x00short")
        assert probe.last_delay == 0.0 and probe.delay(now[0]) == 0.0
    finally:
        probe.close()


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
