"""A small authoritative DNS server on loopback UDP for tests (built on dnspython's message API), so that
RFC 3263 resolution is tested without a network:

    async with DnsTestServer() as dns_server:
        dns_server.add("example.test", "NAPTR", '10 50 "s" "SIP+D2U" "" _sip._udp.example.test.')
        dns_server.add("_sip._udp.example.test", "SRV", "0 0 5070 proxy.example.test.")
        dns_server.add("proxy.example.test", "A", "127.0.0.1")
        settings = LookupSettings(nameservers=(("127.0.0.1", dns_server.port),))

Records are given in zone-file text form. A name with no record of the asked type answers NODATA, a
name with no record at all NXDOMAIN (both with a SOA, negative TTL `negative_ttl`); `silent = True`
drops every query (a server that never answers); `queries` lists what was asked.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsTestServer"]


class DnsTestServer(asyncio.DatagramProtocol):
    def __init__(self, host: str = "127.0.0.1", *, negative_ttl: int = 30) -> None:
        self.host = host
        self.port = 0
        self.negative_ttl = negative_ttl
        self.silent = False
        self.queries: list[tuple[str, str]] = []
        self._records: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._transport: asyncio.DatagramTransport | None = None

    def add(self, name: str, rdtype: str, text: str, ttl: int = 300) -> None:
        """A record of `name` (no final dot needed), e.g. add("a.test", "A", "127.0.0.1")."""
        dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)       # a typo fails here, not at query time
        self._records.setdefault((_key(name), rdtype.upper()), []).append((ttl, text))

    def clear(self) -> None:
        self._records.clear()
        self.queries.clear()

    async def __aenter__(self) -> DnsTestServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._transport = transport
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001 - a garbled datagram gets no answer
            return
        question = query.question[0]
        name, rdtype = _key(question.name.to_text()), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.silent or self._transport is None:
            return
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        records = self._records.get((name, rdtype))
        if records:
            ttl = min(t for t, _ in records)
            reply.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", rdtype,
                                                         [text for _, text in records]))
        else:
            if not any(key[0] == name for key in self._records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(dns.rrset.from_text(
                "test.", self.negative_ttl, "IN", "SOA",
                f"ns.test. admin.test. 1 3600 600 86400 {self.negative_ttl}"))
        self._transport.sendto(reply.to_wire(), addr)


def _key(name: str) -> str:
    return name.lower().rstrip(".")
