"""TransportLayer.adopt: a worker process wraps the sockets its supervisor bound (docs/workers.md,
section 1) instead of binding; and the queue probes of workers sharing one UDP socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import pytest
from .conftest import StubCore

from routescript.transport import TransportLayer
from routescript.transport.address import TCP, UDP
from routescript.transport.probe import _MAGIC, QueueDelayProbe
from routescript.transport.udp import UdpEndpoint

OPTIONS = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bKadopt\r\n"
           b"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: adopt\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_adopted_udp_socket_is_read_and_answers(core: StubCore) -> None:
    sock = _udp_socket()
    info = await core.layer.adopt(sock)
    assert (info.proto, info.host, info.port) == (UDP, "127.0.0.1", sock.getsockname()[1])
    assert core.layer.sockets == [info]
    await core.layer.start_serving()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
        client.sendto(OPTIONS % (b"UDP", client.getsockname()[1]), ("127.0.0.1", info.port))
        await core.wait_for(1)
        reply = await asyncio.get_running_loop().run_in_executor(None, client.recv, 65536)
    assert reply.startswith(b"SIP/2.0 200 ")


async def test_adopted_tcp_listener_accepts(core: StubCore) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    info = await core.layer.adopt(listener)
    assert (info.proto, info.port) == (TCP, listener.getsockname()[1])
    await core.layer.start_serving()
    reader, writer = await asyncio.open_connection("127.0.0.1", info.port)
    writer.write(OPTIONS % (b"TCP", writer.get_extra_info("sockname")[1]))
    await core.wait_for(1)
    assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"SIP/2.0 200 ")
    writer.close()


async def test_a_socket_adopted_for_sending_only_is_never_read(core: StubCore) -> None:
    sock = _udp_socket()
    info = await core.layer.adopt(sock, read=False)
    await core.layer.start_serving()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"left for another worker", ("127.0.0.1", info.port))
    await asyncio.sleep(0.05)
    assert core.received == []
    assert sock.recv(100) == b"left for another worker"   # still in the kernel: nobody read it


async def test_another_kind_of_socket_is_refused(core: StubCore) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with pytest.raises(ValueError, match="cannot adopt socket type"):
        await core.layer.adopt(a)
    a.close()
    b.close()


class _Layer:
    """What UdpEndpoint calls on its layer: records the datagrams that are not probes."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def on_datagram(self, endpoint: object, data: bytes, host: str, port: int) -> None:
        self.datagrams.append(data)


@pytest.mark.parametrize("shared", [True, False])
def test_a_sibling_workers_probe_is_a_probe_only_on_a_shared_socket(shared: bool) -> None:
    listener = _udp_socket()
    probe = QueueDelayProbe("127.0.0.1", listener.getsockname()[1])
    layer = _Layer()
    endpoint = UdpEndpoint(layer, listener)  # type: ignore[arg-type]
    endpoint.info = object()                 # type: ignore[assignment]
    endpoint.transport = object()            # type: ignore[assignment]
    endpoint.probe = probe
    endpoint.shared = shared
    sent = time.monotonic() - 0.2            # another worker's probe, 200 ms in the buffer
    endpoint.datagram_received(_MAGIC + struct.pack("!d", sent), ("127.0.0.1", probe.port + 1))
    if shared:
        assert layer.datagrams == [] and probe.last_delay >= 0.2
    else:
        assert len(layer.datagrams) == 1 and probe.last_delay == 0.0
    probe.close()
    listener.close()


async def test_two_layers_adopting_one_socket_both_read_it() -> None:
    """Two workers on one inherited fd: each datagram reaches exactly one of them."""
    sock = _udp_socket()
    cores = [StubCore(answer=False), StubCore(answer=False)]
    all_in = asyncio.Event()

    def counting(core: StubCore) -> Any:
        def on_message(msg: Any, source: Any) -> None:
            core.on_message(msg, source)
            if sum(len(c.received) for c in cores) == 20:
                all_in.set()
        return on_message

    for c in cores:
        c.layer = TransportLayer(counting(c))
        await c.layer.adopt(sock.dup())   # one fd per process in real life: the same open socket
        await c.layer.start_serving()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for i in range(20):
            client.sendto((OPTIONS % (b"UDP", 5999)).replace(b"Call-ID: adopt", b"Call-ID: c%d" % i),
                          sock.getsockname())
    await asyncio.wait_for(all_in.wait(), 2)
    await asyncio.sleep(0.05)   # and no datagram is read twice
    call_ids = sorted(m.call_id for c in cores for m, _ in c.received)
    assert call_ids == sorted(f"c{i}" for i in range(20))
    for c in cores:
        await c.layer.close()
    sock.close()
