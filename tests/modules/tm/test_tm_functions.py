"""tm's script functions in one process, without sockets: the real TransactionLayer and relay sender
over a recording transport. t_relay of an INVITE (100, the branch, replies forwarded, the hop-by-hop
ACK), of its CANCEL, of an ACK (stateless); the automatic error reply and flag 0x2; t_check_status,
t_was_cancelled, t_check_trans for a CANCEL, the $T_ pseudo-variables."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from routescript.core.relay import STATELESS_BRANCH, Relay
from routescript.resolve.literal import LiteralResolver
from routescript.script.context import FAILURE_ROUTE, ONREPLY_ROUTE, MsgContext
from routescript.modules.tm import newtran
from routescript.sip import build_reply, parse_message
from routescript.sip.assembled import AssembledResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "basic"))
from basicmods_harness import SRC, Harness, request


def harness() -> Harness:
    h = Harness(["sl", "tm"])
    h.server.relay = Relay(h.server.transactions, h.transport, h.server.sockets, LiteralResolver())
    return h


def sent(h: Harness) -> list:
    return [parse_message(data) for data, _dest in h.transport.sent]


def answer(h: Harness, req, status: int) -> None:
    resp = parse_message(build_reply(req, status, to_tag="callee").to_bytes())
    assert h.server.transactions.on_response(resp, SRC)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_t_relay_invite_forwards_replies_and_acks_a_486_hop_by_hop() -> None:
    h = harness()
    ctx = h.ctx(request("INVITE", ruri="sip:bob@192.0.2.9:5070"))
    assert await h.call(ctx, "t_relay") == 1
    assert [r.status for r in h.transport.replies] == [100]
    (out,) = sent(h)
    assert out.ruri == "sip:bob@192.0.2.9:5070" and len(out.vias) == 2 and out.max_forwards == 70
    assert h.transport.sent[0][1].host == "192.0.2.9" and h.transport.sent[0][1].port == 5070
    answer(h, out, 180)
    answer(h, out, 486)
    await settle()
    assert [r.status for r in h.transport.replies] == [100, 180, 486]
    assert all(len(r.vias) == 1 for r in h.transport.replies)
    ack = sent(h)[-1]
    assert ack.method == "ACK" and ack.via.branch == out.via.branch


async def test_t_relay_cancel_answers_200_and_cancels_the_ringing_branch() -> None:
    h = harness()
    ctx = h.ctx(request("INVITE", ruri="sip:bob@192.0.2.9"))
    assert await h.call(ctx, "t_relay") == 1
    out = sent(h)[0]
    answer(h, out, 180)
    await settle()
    cancel = h.ctx(request("CANCEL", ruri="sip:bob@192.0.2.9"))
    assert h.call(cancel, "t_check_trans") == 1
    assert await h.call(cancel, "t_relay") == 1
    assert h.transport.replies[-1].status == 200 and h.transport.replies[-1].cseq.method == "CANCEL"
    downstream = sent(h)[-1]
    assert downstream.method == "CANCEL" and downstream.via.branch == out.via.branch
    answer(h, out, 487)
    await settle()
    assert h.transport.replies[-1].status == 487
    proxy = h.server.modules.get("tm").proxy_of(ctx)
    assert proxy is not None and proxy.cancelled
    assert h.call(ctx, "t_was_cancelled") == 1


async def test_t_relay_of_an_ack_is_stateless() -> None:
    h = harness()
    ctx = h.ctx(request("ACK", ruri="sip:bob@192.0.2.9", to_tag="x"))
    assert await h.call(ctx, "t_relay") == 1
    (out,) = sent(h)
    assert out.method == "ACK" and out.via.branch.startswith(STATELESS_BRANCH)
    assert h.server.transactions.pending == 0


async def test_unresolvable_destination_auto_reply_and_flag_0x2() -> None:
    h = harness()
    ctx = h.ctx(request("MESSAGE", ruri="sip:bob@example.com"))
    assert await h.call(ctx, "t_relay") == 0                  # answered here, the script stops
    assert [(r.status, r.reason) for r in h.transport.replies] == [(478, "Unresolvable destination")]
    h2 = harness()
    ctx2 = h2.ctx(request("MESSAGE", ruri="sip:bob@example.com"))
    assert await h2.call(ctx2, "t_relay", "0x2") == -4
    assert h2.transport.replies == [] and ctx2.extra["sl_error"] == (478, "Unresolvable destination")


async def test_t_check_status_and_reply_pseudo_variables() -> None:
    h = harness()
    tm = h.server.modules.get("tm")
    ctx = MsgContext(msg=parse_message(build_reply(parse_message(request("INVITE").replace("\n", "\r\n")
                                                                 .encode()), 486, "Busy Here").to_bytes()),
                     server=h.server, route_type=ONREPLY_ROUTE, reply_code=486)
    assert h.call(ctx, "t_check_status", re.compile("48[0-9]")) == 1
    assert h.call(ctx, "t_check_status", re.compile("^2")) == -1
    assert tm.pv_reply_reason(ctx, None, None) == "Busy Here"
    failure = MsgContext(msg=h.ctx(request("INVITE")).msg, server=h.server, route_type=FAILURE_ROUTE,
                         reply_code=408)
    assert h.call(failure, "t_check_status", re.compile("408")) == 1


async def test_fr_pseudo_variables_and_t_set_fr_arm_the_next_relay() -> None:
    h = harness()
    tm = h.server.modules.get("tm")
    ctx = h.ctx(request("INVITE", ruri="sip:bob@192.0.2.9"))
    assert tm.pv_fr_inv_timeout(ctx, None, None) == 120 and tm.pv_fr_timeout(ctx, None, None) == 5
    assert h.call(ctx, "t_set_fr", 30, 2) == 1
    tm.set_fr_timeout(ctx, None, None, 3)
    assert await h.call(ctx, "t_relay") == 1
    proxy = tm.proxy_of(ctx)
    assert proxy.arm.fr_inv_timeout == 30.0 and proxy.arm.fr_timeout == 3.0
    assert tm.pv_fr_timeout(ctx, None, None) == 3


async def test_t_newtran_answers_an_invite_100_and_t_check_status_reads_the_last_reply() -> None:
    h = harness()
    ctx = h.ctx(request("INVITE"))
    assert h.call(ctx, "t_newtran") == 1
    assert [r.status for r in h.transport.replies] == [100]
    assert h.call(ctx, "t_check_status", re.compile("100")) == 1
    assert h.call(ctx, "t_newtran") == 1 and len(h.transport.replies) == 1     # once
    other = h.ctx(request("MESSAGE", branch="z9hG4bKmsg"))
    assert h.call(other, "t_newtran") == 1 and len(h.transport.replies) == 1   # INVITE only


async def test_a_retransmitted_invite_gets_the_relays_100_again_as_build_reply_writes_it() -> None:
    h = harness()
    invite = request("INVITE", ruri="sip:bob@192.0.2.9:5070", extra="Timestamp: 12\n")
    ctx = h.ctx(invite)
    assert await h.call(ctx, "t_relay") == 1
    (trying,) = h.transport.replies
    expected = build_reply(ctx.msg, 100, server=h.server.replier._server_header()).to_bytes()
    assert trying.to_bytes() == expected and isinstance(trying, AssembledResponse)   # bytes only
    again = h.ctx(invite)
    assert h.server.transactions.lookup(again.msg, SRC) is ctx.transaction   # absorbed: the 100 again
    assert [r.to_bytes() for r in h.transport.replies] == [expected, expected]
    kept = ctx.transaction.last_response
    assert kept.status == 100 and kept.call_id == "call-1@test"       # its head read back from the bytes


async def test_a_100_a_reply_hook_reads_at_once_is_built_as_usual() -> None:
    h = harness()
    ctx = h.ctx(request("INVITE", ruri="sip:bob@192.0.2.9:5070"))
    seen: list = []
    newtran(ctx).reply_hooks = [seen.append]          # what create_dialog() and do_accounting() add
    assert await h.call(ctx, "t_relay") == 1
    (trying,) = h.transport.replies
    assert seen == [trying] and not isinstance(trying, AssembledResponse)   # not parsed back from bytes
    assert trying.to_bytes() == build_reply(ctx.msg, 100, server=h.server.replier._server_header()).to_bytes()


async def test_t_relay_outbound_proxy_does_not_override_du() -> None:
    h = harness()
    ctx = h.ctx(request("MESSAGE", ruri="sip:bob@192.0.2.9"))
    ctx.dst_uri = "sip:192.0.2.20:5090"
    assert await h.call(ctx, "t_relay", None, "udp:192.0.2.30:5060") == 1
    assert h.transport.sent[-1][1].host == "192.0.2.20" and h.transport.sent[-1][1].port == 5090


async def test_t_reply_with_body_takes_the_content_type_from_append_to_reply() -> None:
    h = Harness(["sl", "tm", "sipmsgops"])
    ctx = h.ctx(request("MESSAGE"))
    assert h.call(ctx, "append_to_reply", "Content-Type: text/plain\r\n") == 1
    assert h.call(ctx, "t_reply_with_body", 200, "OK", "hello") == 1
    (reply,) = h.transport.replies
    assert reply.body == b"hello" and reply.header("content-type") == "text/plain"
    assert reply.header("content-length") == "5"
