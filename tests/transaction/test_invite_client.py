"""The INVITE client transaction (RFC 3261 17.1.1, RFC 6026 7.2) with a fake clock: Timer A/B, the
hop-by-hop ACK for 300-699, every 2xx handed up, Timer D/M, and the core delivering to its creator."""

from __future__ import annotations

from routescript.sip import Destination, build_reply, build_request
from routescript.transaction import (
    Deliver,
    InviteClientTransaction,
    State,
    TimerConfig,
    TransactionCore,
    Transmit,
    ack_for,
)
from routescript.transaction.states import INVITE_CLIENT

T = TimerConfig(timer_f=5.0)


def invite(branch: str = "z9hG4bKinv1"):
    return build_request("INVITE", "sip:bob@192.0.2.9", [
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
        ("Route", "<sip:192.0.2.7;lr>"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-9"),
        ("CSeq", "7 INVITE"),
    ])


def reply(req, status: int, tag: str = "t1"):
    return build_reply(req, status, to_tag=tag)


def run_clock(machine, until: float):
    out = []
    for _ in range(1000):
        deadline = machine.next_deadline()
        if deadline is None or deadline > until:
            return out
        out += [(deadline, a) for a in machine.handle_timer(deadline)]
    raise AssertionError("clock loop did not settle")


def test_udp_retransmits_on_timer_a_doubling_then_408_on_timer_b_fr_timeout():
    ct = InviteClientTransaction(invite(), reliable=False, timers=T, now=0.0)
    events = run_clock(ct, 100.0)
    assert [t for t, a in events if isinstance(a, Transmit)] == [0.5, 1.5, 3.5]   # A: T1, 2T1, 4T1
    finals = [(t, a) for t, a in events if isinstance(a, Deliver)]
    assert len(finals) == 1 and finals[0][0] == 5.0
    assert finals[0][1].response.status == 408 and finals[0][1].local
    assert ct.state is State.TERMINATED


def test_provisional_stops_timer_a_and_b():
    ct = InviteClientTransaction(invite(), reliable=False, timers=T, now=0.0)
    out = ct.receive_response(reply(ct.request, 180), 0.2)
    assert [a.response.status for a in out if isinstance(a, Deliver)] == [180]
    assert ct.state is State.PROCEEDING
    assert ct.next_deadline() == 0.2 + T.invite_tu_timeout     # only the leak bound remains


def test_error_final_is_acked_hop_by_hop_and_reacked_on_retransmission():
    req = invite()
    ct = InviteClientTransaction(req, reliable=False, timers=T, now=0.0)
    resp = reply(req, 486)
    out = ct.receive_response(resp, 1.0)
    acks = [a.message for a in out if isinstance(a, Transmit)]
    assert len(acks) == 1
    ack = acks[0]
    assert ack.method == "ACK" and ack.ruri == req.ruri
    assert ack.via.branch == "z9hG4bKinv1"          # the INVITE's branch: hop by hop
    assert ack.to.tag == "t1" and str(ack.cseq) == "7 ACK"
    assert ack.header_all("route") == ["<sip:192.0.2.7;lr>"]
    assert [a.response.status for a in out if isinstance(a, Deliver) and a.final] == [486]
    again = ct.receive_response(resp, 2.0)
    assert [a.message for a in again if isinstance(a, Transmit)] == [ack]
    assert not [a for a in again if isinstance(a, Deliver)]
    assert ct.next_deadline() == 1.0 + 32.0         # Timer D over UDP
    run_clock(ct, 40.0)
    assert ct.state is State.TERMINATED


def test_every_2xx_is_handed_up_the_later_ones_not_as_final():
    req = invite()
    ct = InviteClientTransaction(req, reliable=True, timers=T, now=0.0)
    first = ct.receive_response(reply(req, 200, "a"), 1.0)
    second = ct.receive_response(reply(req, 200, "b"), 1.1)   # another fork's 2xx
    assert [(a.response.status, a.final) for a in first if isinstance(a, Deliver)] == [(200, True)]
    assert [(a.response.to.tag, a.final) for a in second if isinstance(a, Deliver)] == [("b", False)]
    assert not [a for a in first + second if isinstance(a, Transmit)]   # a 2xx is ACKed end to end
    assert ct.state is State.ACCEPTED
    run_clock(ct, 100.0)
    assert ct.state is State.TERMINATED             # Timer M


def test_ack_for_keeps_only_the_top_via():
    req = invite()
    req.add_header("Via", "SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKup")
    ack = ack_for(req, reply(req, 404))
    assert ack.header_all("via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1"]


def test_table_never_leaves_terminated():
    assert not [k for k in INVITE_CLIENT if k[0] is State.TERMINATED]


def test_core_sends_the_ack_and_keeps_the_transaction_for_timer_d():
    core = TransactionCore(T, lambda resp, src: None)   # type: ignore[arg-type,return-value]
    got: list[int] = []
    req = invite("z9hG4bKcore")
    dest = Destination("udp", "192.0.2.9", 5060)
    ct = core.send_request(req, dest, 0.0, lambda r: got.append(r.status),
                           on_provisional=lambda r: got.append(r.status))
    assert isinstance(ct, InviteClientTransaction)
    assert core.receive_response(reply(req, 603), 1.0)
    data = core.take_data()
    assert len(data) == 1 and data[0][0].startswith(b"ACK sip:bob@192.0.2.9 SIP/2.0")
    for cb, resp, _t in core.take_deliveries():
        cb(resp)
    assert got == [603]
    assert core.receive_response(reply(req, 603), 2.0)     # retransmission: ACKed again
    assert core.take_data()[0][0].startswith(b"ACK ")
    assert not core.take_deliveries()
    core.handle_timer(40.0)
    assert core.pending == 0


def test_core_finds_the_invite_server_transaction_of_a_cancel() -> None:
    from routescript.sip import SocketInfo, Source

    core = TransactionCore(T, lambda resp, src: None)   # type: ignore[arg-type,return-value]
    source = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "192.0.2.1", 5060)
    req = invite("z9hG4bKsrv")
    server_tx = core.create(req, source, 0.0)
    cancel = build_request("CANCEL", req.ruri, [
        ("Via", req.header("via") or ""), ("From", req.header("from") or ""), ("To", req.header("to") or ""),
        ("Call-ID", req.call_id), ("CSeq", "7 CANCEL")])
    assert core.invite_of(cancel) is server_tx
    other = build_request("CANCEL", req.ruri, [("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKelse"),
                                                ("Call-ID", req.call_id), ("CSeq", "7 CANCEL")])
    assert core.invite_of(other) is None


def test_core_cancel_of_an_invite_client_transaction_delivers_nothing() -> None:
    core = TransactionCore(T, lambda resp, src: None)   # type: ignore[arg-type,return-value]
    got: list[int] = []
    req = invite("z9hG4bKgone")
    ct = core.send_request(req, Destination("udp", "192.0.2.9", 5060), 0.0, lambda r: got.append(r.status))
    assert ct is not None
    core.cancel(ct)
    core.handle_timer(100.0)
    assert core.take_deliveries() == [] and core.pending == 0
    assert not core.receive_response(reply(req, 200), 1.0)   # nothing left to match


def test_a_transaction_may_have_its_own_fr_timeout() -> None:
    ct = InviteClientTransaction(invite(), reliable=True, timers=T, now=0.0, fr_timeout=9.0)
    events = run_clock(ct, 100.0)
    assert [(t, a.response.status) for t, a in events if isinstance(a, Deliver)] == [(9.0, 408)]


def test_core_forgets_an_invite_branch_at_its_2xx_later_ones_are_strays() -> None:
    """The later 2xx (retransmissions, other forks') go on statelessly by Via (core/relay.py), so the
    answered branch is not kept for RFC 6026's Timer M."""
    core = TransactionCore(T, lambda resp, src: None)   # type: ignore[arg-type,return-value]
    got: list[int] = []
    req = invite("z9hG4bKok")
    core.send_request(req, Destination("udp", "192.0.2.9", 5060), 0.0, lambda r: got.append(r.status),
                      on_provisional=lambda r: got.append(-r.status))
    assert core.receive_response(reply(req, 180), 0.5)
    assert core.receive_response(reply(req, 200, "a"), 1.0)
    for cb, resp, _t in core.take_deliveries():
        cb(resp)
    assert got == [-180, 200] and core.pending == 0
    assert not core.receive_response(reply(req, 200, "b"), 1.1)


def test_wait_is_timer_l() -> None:
    assert TimerConfig().timer_l == 32.0 and TimerConfig(wait=5.0).timer_l == 5.0
