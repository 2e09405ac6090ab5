"""SipTestClient answers a request where its top Via says (RFC 3261 18.2.2), not always to its own server."""

from __future__ import annotations

import asyncio
import socket

import pytest

from routescript.sip import build_request, parse_message
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio


async def test_reply_goes_to_the_via_sent_by() -> None:
    home = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (home, other):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    try:
        async with await SipTestClient.start("udp", home.getsockname()) as client:
            port = other.getsockname()[1]
            req = build_request("NOTIFY", client.contact_uri, [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKother1"), ("From", "<sip:a@x>;tag=1"),
                ("To", "<sip:b@y>;tag=2"), ("Call-ID", "c1"), ("CSeq", "1 NOTIFY")])
            other.sendto(req.to_bytes(), ("127.0.0.1", client.local_port))
            got = await client.expect_request("NOTIFY")
            await client.reply(got, 200)
            loop = asyncio.get_running_loop()
            data = await asyncio.wait_for(loop.sock_recv(other, 65536), 2)
            assert parse_message(data).status == 200
            with pytest.raises(BlockingIOError):
                home.recv(65536)
    finally:
        home.close()
        other.close()
