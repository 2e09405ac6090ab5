"""The relay sender (routescript/core/relay.py) and the literal resolver, without I/O: the outgoing
request (Request-URI, Max-Forwards), our Via and the send hooks, the socket choice, resolution errors
with OpenSIPS's codes, stateless branches and the stateless reply forwarding."""

from __future__ import annotations

import asyncio

import pytest

from routescript.core.relay import STATELESS_BRANCH, Relay, RelayError, stateless_branch
from routescript.resolve import ResolveError, Target
from routescript.resolve.literal import LiteralResolver
from routescript.sip import Destination, SocketInfo, build_reply, parse_message, parse_uri

UDP = SocketInfo("udp", "127.0.0.1", 5060)
TCP = SocketInfo("tcp", "127.0.0.1", 5060)
UDP6 = SocketInfo("udp", "::1", 5060)


def invite(max_forwards: str | None = "70"):
    lines = ["INVITE sip:bob@192.0.2.9 SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKup1;received=192.0.2.1;rport=5071",
             "From: <sip:alice@example.com>;tag=a", "To: <sip:bob@example.com>", "Call-ID: c1",
             "CSeq: 1 INVITE"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    return parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Destination]] = []

    def send(self, data: bytes, dest: Destination) -> None:
        self.sent.append((data, dest))


def relay(sockets=(UDP, TCP, UDP6)) -> tuple[Relay, FakeTransport]:
    transport = FakeTransport()
    return Relay(None, transport, list(sockets), LiteralResolver()), transport


def test_outgoing_is_a_copy_with_the_branch_uri_and_max_forwards_decremented() -> None:
    req = invite()
    out = Relay.outgoing(req, "sip:bob@192.0.2.10", maxfwd_done=False)
    assert out.ruri == "sip:bob@192.0.2.10" and out.max_forwards == 69
    assert req.ruri == "sip:bob@192.0.2.9" and req.max_forwards == 70     # the received one untouched


def test_outgoing_leaves_max_forwards_to_maxfwd_and_adds_70_when_absent() -> None:
    assert Relay.outgoing(invite(), None, maxfwd_done=True).max_forwards == 70
    assert Relay.outgoing(invite(None), None, maxfwd_done=False).max_forwards == 70


@pytest.mark.parametrize(("value", "code", "status"), [("0", -2, 483), ("x", -2, 400)])
def test_outgoing_refuses_max_forwards_0_or_garbage(value: str, code: int, status: int) -> None:
    with pytest.raises(RelayError) as err:
        Relay.outgoing(invite(value), None, maxfwd_done=False)
    assert err.value.code == code and err.value.sl_error[0] == status


def test_attempt_puts_our_via_on_top_and_runs_the_hooks_with_the_socket() -> None:
    seen = []

    def hook(request, sock) -> None:
        seen.append(sock)
        request.add_header("Record-Route", f"<sip:{sock.host}:{sock.port};lr>", first=True)

    base = Relay.outgoing(invite(), None, maxfwd_done=False)
    attempt = Relay.attempt(base, Target("tcp", "192.0.2.9", 5080), TCP, [hook])
    vias = attempt.request.vias
    assert len(vias) == 2 and vias[0].transport == "TCP" and vias[0].branch == attempt.branch
    assert attempt.branch.startswith("z9hG4bK") and vias[1].branch == "z9hG4bKup1"
    assert seen == [TCP] and attempt.request.header("record-route") == "<sip:127.0.0.1:5060;lr>"
    assert attempt.destination == Destination("tcp", "192.0.2.9", 5080, None, TCP)
    assert not base.has_header("record-route")                       # each attempt starts from base
    assert Relay.attempt(base, Target("tcp", "192.0.2.9", 5080), TCP, None).branch != attempt.branch
    # the last attempt from base edits base itself: no copy, base gets our Via and the hooks' lines
    last = Relay.attempt(base, Target("tcp", "192.0.2.9", 5080), TCP, [hook], last=True)
    assert last.request is base and base.via.branch == last.branch and base.has_header("record-route")


def test_socket_choice_forced_then_by_transport_and_family() -> None:
    r, _ = relay()
    assert r.socket_for(Target("udp", "192.0.2.9", 5060), None) is UDP
    assert r.socket_for(Target("udp", "::2", 5060), None) is UDP6
    forced = SocketInfo("udp", "127.0.0.2", 5062)
    assert r.socket_for(Target("udp", "192.0.2.9", 5060), forced) is forced
    assert r.socket_for(Target("tcp", "192.0.2.9", 5060), forced) is TCP   # forced one is UDP
    with pytest.raises(RelayError) as err:
        r.socket_for(Target("tcp", "::2", 5060), None)
    assert err.value.code == -4


async def test_targets_from_the_literal_resolver_and_its_errors() -> None:
    r, _ = relay(sockets=(UDP, TCP))
    assert await r.targets("sip:bob@192.0.2.9:5080;transport=tcp") == [Target("tcp", "192.0.2.9", 5080)]
    assert await r.targets("sip:192.0.2.9") == [Target("udp", "192.0.2.9", 5060)]
    for uri, why in [("sip:bob@example.com", "host name"), ("sips:bob@192.0.2.9", "tls"),
                     ("not a uri", "not a URI")]:
        with pytest.raises(RelayError) as err:
            await r.targets(uri)
        assert err.value.code == -4 and err.value.sl_error == (478, "Unresolvable destination")
        assert why in str(err.value)


async def test_targets_of_an_ip_address_are_kept_per_uri_sockets_and_resolver() -> None:
    """An IP-address URI is resolved once (its answer cannot change) and each caller gets its own list;
    a host name is asked every time; other sockets or another resolver ask again."""
    asked: list[str] = []

    class Counting(LiteralResolver):
        def resolve_now(self, uri, protos):  # type: ignore[no-untyped-def]
            asked.append(str(uri))
            if uri.host == "example.com":
                return [Target("udp", "192.0.2.50", 5060)]
            return super().resolve_now(uri, protos)

    r, _ = relay(sockets=(UDP,))
    r.resolver = Counting()
    first = await r.targets("sip:bob@192.0.2.9:5080")
    first.append(Target("udp", "192.0.2.99", 1))          # the caller's own list
    assert await r.targets("sip:bob@192.0.2.9:5080") == [Target("udp", "192.0.2.9", 5080)]
    assert await r.targets("sip:bob@example.com") == await r.targets("sip:bob@example.com")
    assert asked == ["sip:bob@192.0.2.9:5080", "sip:bob@example.com", "sip:bob@example.com"]
    r.sockets = [UDP, TCP]
    assert await r.targets("sip:bob@192.0.2.9:5080;transport=tcp") == [Target("tcp", "192.0.2.9", 5080)]
    await r.targets("sip:bob@192.0.2.9:5080")
    r.resolver = Counting()
    await r.targets("sip:bob@192.0.2.9:5080")
    assert asked[3:] == ["sip:bob@192.0.2.9:5080;transport=tcp", "sip:bob@192.0.2.9:5080",
                         "sip:bob@192.0.2.9:5080"]


def test_literal_resolver_maddr_and_default_ports() -> None:
    resolver = LiteralResolver()
    both = frozenset({"udp", "tcp"})
    uri = parse_uri("sip:bob@example.com;maddr=192.0.2.7")
    assert resolver.resolve_now(uri, both) == [Target("udp", "192.0.2.7", 5060)]
    assert resolver.resolve_now(parse_uri("sip:[::1]:5070"), both) == [Target("udp", "::1", 5070)]
    with pytest.raises(ResolveError):
        resolver.resolve_now(parse_uri("sip:bob@example.com"), both)
    with pytest.raises(ResolveError):
        asyncio.run(resolver.resolve(parse_uri("sip:bob@example.com"), both))


def test_stateless_branch_is_stable_per_request_and_ours() -> None:
    a, b = invite(), invite()
    assert stateless_branch(a) == stateless_branch(b)
    assert stateless_branch(a).startswith(STATELESS_BRANCH)
    b.set_top_via("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKother")
    assert stateless_branch(a) != stateless_branch(b)


def test_stateless_forward_and_its_reply_forwarding() -> None:
    r, transport = relay()
    base = Relay.outgoing(invite(), None, maxfwd_done=False)
    attempt = Relay.attempt(base, Target("udp", "192.0.2.9", 5060), UDP, None,
                            branch=stateless_branch(invite()))
    r.send_stateless(attempt)
    assert transport.sent[0][1] == attempt.destination
    reply = build_reply(attempt.request, 200, to_tag="x")
    assert r.forward_reply(reply)
    data, dest = transport.sent[1]
    assert dest == Destination("udp", "192.0.2.1", 5071)     # received + rport of the caller's Via
    assert data.count(b"Via:") == 1 and b"z9hG4bKup1" in data
    other = build_reply(invite(), 200, to_tag="x")           # top Via not a stateless branch of ours
    assert not r.forward_reply(other)
    assert len(transport.sent) == 2


def test_send_failure_is_code_minus_6() -> None:
    class Broken(FakeTransport):
        def send(self, data: bytes, dest: Destination) -> None:
            raise OSError("network unreachable")

    r = Relay(None, Broken(), [UDP], LiteralResolver())
    attempt = Relay.attempt(Relay.outgoing(invite(), None, maxfwd_done=False),
                            Target("udp", "192.0.2.9", 5060), UDP, None)
    with pytest.raises(RelayError) as err:
        r.send_stateless(attempt)
    assert err.value.code == -6 and err.value.sl_error[0] == 477


def test_a_late_2xx_to_an_invite_with_our_via_goes_on_by_via() -> None:
    r, transport = relay()
    attempt = Relay.attempt(Relay.outgoing(invite(), None, maxfwd_done=False),
                            Target("udp", "192.0.2.9", 5060), UDP, None)      # our Via: 127.0.0.1:5060
    late = build_reply(attempt.request, 200, to_tag="fork2")
    assert r.forward_reply(late)
    data, dest = transport.sent[-1]
    assert dest == Destination("udp", "192.0.2.1", 5071) and data.count(b"Via:") == 1
    busy = build_reply(attempt.request, 486, to_tag="x")          # only a 2xx goes on so
    assert not r.forward_reply(busy)
    foreign = build_reply(invite(), 200, to_tag="y")               # top Via not ours: stray
    assert not r.forward_reply(foreign)
