"""TransactionCore on a fake clock: no loop, no sockets, no sleeping. Each test drives the core with `now`
values, empties its outboxes as the adapter does, and advances the clock timer by timer
(get_timer/handle_timer)."""

from __future__ import annotations

import gc
import logging

import pytest

from routescript.sip.assembled import assemble_request
from routescript.sip import (
    Destination,
    SIPRequest,
    SIPResponse,
    SocketInfo,
    Source,
    build_reply,
    build_request,
    generate_branch,
    parse_message,
)
from routescript.transaction.core import STALE_SLACK
from routescript.transaction import (
    NonInviteClientTransaction,
    State,
    TimerConfig,
    TransactionCore,
    TransactionError,
    TransactionLimitError,
)

T1, T2, T4, TIMER_F = 0.02, 0.08, 0.1, 0.5
TIMERS = TimerConfig(t1=T1, t2=T2, t4=T4, timer_f=TIMER_F)
UDP_SRC = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "192.0.2.10", 5062)
TCP_SRC = Source("tcp", SocketInfo("tcp", "127.0.0.1", 5060), "192.0.2.10", 40001, conn_id=7)
PHONE = Destination("udp", "192.0.2.10", 5062)


def route(response: SIPResponse, source: Source) -> Destination:
    """What TransportLayer.reply_destination answers when the Via has nothing to add."""
    return Destination(source.proto, source.remote_host, source.remote_port, source.conn_id, source.socket)


class Wire:
    """The core with a fake clock; what it sends and hands up is collected after every step."""

    def __init__(self, **options: int) -> None:
        self.core = TransactionCore(TIMERS, route, **options)
        self.now = 0.0
        self.responses: list[tuple[float, SIPResponse, Destination]] = []
        self.data: list[tuple[float, bytes, Destination]] = []
        self.fail_sends = False

    def collect(self) -> None:
        core = self.core
        while core.responses_out or core.data_out or core.deliveries:
            for response, source, dest, transaction in core.take_responses():
                if self.fail_sends:
                    core.transport_error(transaction, self.now)
                    continue
                self.responses.append((self.now, response, dest or route(response, source)))
            for data, to, client in core.take_data():
                if self.fail_sends and client is not None:
                    core.transport_error(client, self.now)
                    continue
                self.data.append((self.now, data, to))
            for callback, response, _ in core.take_deliveries():
                callback(response)

    def at(self, now: float) -> TransactionCore:
        """Move the clock to `now` (firing every timer due on the way) and return the core."""
        self.run_until(now)
        return self.core

    def run_until(self, until: float) -> None:
        for _ in range(10_000):
            when = self.core.get_timer()
            if when is None or when > until:
                break
            self.now = max(self.now, when)
            self.core.handle_timer(self.now)
            self.collect()
        else:
            raise AssertionError("the timers did not settle")
        self.now = max(self.now, until)

    # --- what a core (the script) does with a server transaction ---

    def receive(self, request: SIPRequest, source: Source = UDP_SRC, status: int | None = 200) -> bool:
        """A request arrives: True when it ran the 'script' (a new transaction), False when absorbed."""
        core = self.core
        found = core.lookup(request, self.now)
        self.collect()
        if found is not None or request.method == "ACK":
            return False
        transaction = core.create(request, source, self.now)
        if status is not None:
            core.reply(transaction, build_reply(request, status, to_tag="srv"), self.now)
            self.collect()
        return True

    def statuses(self) -> list[int]:
        return [response.status for _, response, _ in self.responses]


def request(method: str = "PUBLISH", branch: str | None = None, proto: str = "UDP", cseq: int = 1,
            call_id: str = "call-1") -> SIPRequest:
    return build_request(method, "sip:alice@127.0.0.1", [
        ("Via", f"SIP/2.0/{proto} 192.0.2.10:5062;branch={branch or generate_branch()}"),
        ("From", "<sip:alice@127.0.0.1>;tag=a1"), ("To", "<sip:alice@127.0.0.1>"),
        ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), ("Event", "presence")])


def notify(branch: str | None = None, call_id: str = "sub-1") -> SIPRequest:
    return build_request("NOTIFY", "sip:bob@192.0.2.10:5062", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch or generate_branch()}"),
        ("From", "<sip:alice@127.0.0.1>;tag=srv"), ("To", "<sip:bob@192.0.2.10>;tag=cli"),
        ("Call-ID", call_id), ("CSeq", "1 NOTIFY"), ("Event", "presence"),
        ("Subscription-State", "active;expires=600")])


# --- server transactions ----------------------------------------------------------------------------

def test_retransmitted_request_gets_the_same_reply_and_runs_the_script_once() -> None:
    wire = Wire()
    pub = request()
    assert wire.receive(pub)
    assert not wire.receive(request(branch=pub.via.branch))      # the UAC retransmits, twice
    assert not wire.receive(request(branch=pub.via.branch))
    assert wire.statuses() == [200] and wire.responses[0][1].to.tag == "srv"
    first = (wire.responses[0][1].to_bytes(), route(wire.responses[0][1], UDP_SRC))
    assert [(data, dest) for _, data, dest in wire.data] == [first, first]     # the same bytes, resent
    assert wire.core.pending == 0                                  # not live any more: the limit is free
    assert wire.core.completed == 1                                # kept for Timer J (64*T1 over UDP)
    wire.run_until(64 * T1 - 0.001)
    assert wire.core.completed == 1
    wire.run_until(64 * T1 + 2 * T1)                               # Timer J, found by the sweep
    assert wire.core.completed == 0
    assert wire.receive(request(branch=pub.via.branch))            # after Timer J: a new transaction


def test_retransmission_while_the_script_runs_is_absorbed_and_a_second_final_refused() -> None:
    wire = Wire()
    sub = request("SUBSCRIBE")
    assert wire.receive(sub, status=None)
    assert not wire.receive(request("SUBSCRIBE", branch=sub.via.branch), status=None)
    assert wire.responses == [] and wire.data == []                 # Trying: discarded, nothing sent
    transaction = wire.core.lookup(sub, wire.now)                  # what t_check_trans sees
    assert transaction is not None and transaction.state is State.TRYING
    wire.core.reply(transaction, build_reply(sub, 202), wire.now)  # type: ignore[arg-type]
    wire.collect()
    assert wire.statuses() == [202]
    with pytest.raises(TransactionError):
        wire.core.reply(transaction, build_reply(sub, 200), wire.now)  # type: ignore[arg-type]


def test_provisional_then_final_go_through_the_machine_and_tcp_ends_at_once() -> None:
    wire = Wire()
    pub = request()
    core = wire.core
    transaction = core.create(pub, UDP_SRC, 0.0)
    core.reply(transaction, build_reply(pub, 100), 0.0)
    assert transaction.state is State.PROCEEDING and core.pending == 1
    assert not wire.receive(request(branch=pub.via.branch))        # Proceeding: the 100 is resent
    assert wire.statuses() == [100, 100]
    core.reply(transaction, build_reply(pub, 200, to_tag="t"), 0.0)
    wire.collect()
    assert transaction.state is State.COMPLETED and core.pending == 0 and core.completed == 1
    # TCP: Timer J is 0, the machine ends the transaction at once; nothing goes to the table
    tcp_pub = request(proto="TCP")
    assert wire.receive(tcp_pub, TCP_SRC)
    assert core.pending == 0 and core.completed == 1
    assert wire.responses[-1][2] == Destination("tcp", "192.0.2.10", 40001, 7, TCP_SRC.socket)
    assert wire.receive(request(branch=tcp_pub.via.branch, proto="TCP"), TCP_SRC)   # a new one


def test_ended_invites_leave_no_pile_of_stale_timer_entries() -> None:
    # Each INVITE's 180 s TU timeout goes stale when its final is sent and its transaction ends well
    # before: the heap keeps at most STALE_SLACK of them beyond the live entries (it kept every call
    # of the last 180 s: 126,000 at 700 calls/s).
    wire = Wire(max_transactions=30_000)
    core = wire.core
    holder = request("INVITE", call_id="holder")   # unanswered: its TU timeout stays at the top
    core.create(holder, UDP_SRC, 0.0)
    calls = 3 * STALE_SLACK
    for n in range(calls):
        invite = request("INVITE", call_id=f"call-{n}")
        core.reply(core.create(invite, UDP_SRC, 0.0), build_reply(invite, 200, to_tag="t"), 0.0)
        wire.collect()
    wire.run_until(5.0)            # Timer L ends every one of them, long before their TU timeouts
    assert core.pending == 1 and len(core._by_seq) == 1
    assert len(core._heap) <= 2 + STALE_SLACK
    assert core.get_timer() == pytest.approx(TIMERS.invite_tu_timeout)   # the holder's, still armed


def test_invite_provisionals_in_proceeding_are_kept_and_resent_without_moving_the_timer() -> None:
    wire = Wire()
    core = wire.core
    invite = request("INVITE")
    transaction = core.create(invite, UDP_SRC, 0.0)
    timer = core.get_timer()
    trying, ringing = build_reply(invite, 100), build_reply(invite, 180, to_tag="t")
    core.reply(transaction, trying, 0.0)
    core.reply(transaction, ringing, 0.0)
    wire.collect()
    assert [r for _, r, _ in wire.responses] == [trying, ringing]
    assert transaction.state is State.PROCEEDING and transaction.last_response is ringing
    assert not core.timer_moved and core.get_timer() == timer       # the TU timeout, untouched
    assert not wire.receive(request("INVITE", branch=invite.via.branch))   # the 180 again
    assert [data for _, data, _ in wire.data] == [] and wire.statuses() == [100, 180, 180]
    assert wire.responses[-1][1].to_bytes() == ringing.to_bytes()


def test_a_provisional_when_a_timer_is_due_walks_the_table_and_the_timer_fires() -> None:
    wire = Wire()
    core = wire.core
    invite = request("INVITE")
    transaction = core.create(invite, UDP_SRC, 0.0)
    due = core.get_timer()
    assert due is not None
    core.reply(transaction, build_reply(invite, 180, to_tag="t"), due)   # the TU timeout is due now
    wire.collect()
    assert wire.statuses() == [180]                                 # sent, then the timeout ends it
    assert transaction.state is State.TERMINATED and core.pending == 0


def test_transport_error_on_the_final_reply_ends_the_transaction_through_the_table() -> None:
    wire = Wire()
    pub = request()
    transaction = wire.core.create(pub, UDP_SRC, 0.0)
    wire.fail_sends = True
    wire.core.reply(transaction, build_reply(pub, 200, to_tag="t"), 0.0)
    wire.collect()
    assert transaction.state is State.TERMINATED and wire.core.pending == 0 and wire.core.completed == 0
    wire.fail_sends = False
    assert wire.receive(request(branch=pub.via.branch))            # a new request, not a resend


def test_live_transaction_times_out_in_the_sweep_and_a_late_reply_is_refused() -> None:
    wire = Wire()
    options = request("OPTIONS")
    assert wire.receive(options, status=None)
    transaction = wire.core.server_transactions()[0]
    wire.run_until(64 * T1 - 0.001)
    assert wire.core.pending == 1 and transaction.state is State.TRYING
    wire.run_until(64 * T1 + 2 * T1)                               # TU timeout = 64*T1, found by the sweep
    assert wire.core.pending == 0 and transaction.state is State.TERMINATED
    assert wire.core.get_timer() is None                           # nothing left to sweep
    with pytest.raises(TransactionError):
        wire.core.reply(transaction, build_reply(options, 200), wire.now)


def test_completed_transactions_do_not_count_against_the_limit_and_the_oldest_are_evicted(
        caplog: pytest.LogCaptureFixture) -> None:
    wire = Wire(max_transactions=2, max_completed=3)
    requests = [request("OPTIONS") for _ in range(6)]
    with caplog.at_level(logging.WARNING, logger="routescript.transaction"):
        for req in requests:                                       # 6 > max_transactions = 2: all answered
            assert wire.receive(req)
    assert wire.statuses() == [200] * 6
    assert wire.core.pending == 0 and wire.core.completed == 3
    assert "completed-transaction cache full" in caplog.text
    assert not wire.receive(request("OPTIONS", branch=requests[-1].via.branch))   # kept: resent
    assert len(wire.data) == 1
    assert wire.receive(request("OPTIONS", branch=requests[0].via.branch))        # evicted: runs again


def test_transaction_bound_refuses_new_server_and_client_transactions() -> None:
    wire = Wire(max_transactions=1)
    assert wire.receive(request("OPTIONS"), status=None)
    assert wire.core.pending == 1
    with pytest.raises(TransactionLimitError) as err:
        wire.core.create(request("OPTIONS"), UDP_SRC, 0.0)
    assert err.value.status == 503 and err.value.retry_after > 0
    got: list[SIPResponse] = []
    assert wire.core.send_request(notify(), PHONE, 0.0, got.append) is None
    wire.collect()
    assert [r.status for r in got] == [503]


def test_each_client_transactions_final_is_counted_once_by_its_class() -> None:
    wire = Wire(max_transactions=2)
    core = wire.core
    got: list[SIPResponse] = []
    answered, timed_out = notify(), notify(call_id="sub-2")
    core.send_request(answered, PHONE, 0.0, got.append)
    core.send_request(timed_out, PHONE, 0.0, got.append)
    assert core.send_request(notify(call_id="sub-3"), PHONE, 0.0, got.append) is None   # over the bound
    ok = parse_message(build_reply(answered, 200, to_tag="w").to_bytes())
    core.receive_response(ok, 0.01)
    core.receive_response(ok, 0.02)                                # its retransmission: absorbed
    wire.collect()
    wire.run_until(TIMER_F + 0.01)                                 # the other one: 408 on Timer F
    assert sorted(r.status for r in got) == [200, 408, 503]
    assert core.counters.finals == [0, 0, 1, 0, 1, 1, 0]           # type: ignore[attr-defined]


def test_invite_error_retransmitted_on_timer_g_until_the_ack_which_is_absorbed() -> None:
    wire = Wire()
    invite = request("INVITE")
    assert wire.receive(invite, status=486)
    wire.run_until(0.1)                      # Timer G: T1, 2*T1, 4*T1 (capped at T2) -> 0.02, 0.06
    assert [t for t, _, _ in wire.responses] == pytest.approx([0.0, 0.02, 0.06])
    ack = build_request("ACK", "sip:alice@127.0.0.1", [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch={invite.via.branch}"),
        ("From", "<sip:alice@127.0.0.1>;tag=a1"), ("To", "<sip:alice@127.0.0.1>;tag=srv"),
        ("Call-ID", "call-1"), ("CSeq", "1 ACK")])
    assert wire.core.lookup(ack, wire.now) is not None             # absorbed: never reaches the script
    settled = len(wire.responses)
    wire.run_until(0.1 + T4 - 0.001)
    assert len(wire.responses) == settled and wire.core.pending == 1   # Confirmed: no more resends
    wire.run_until(0.1 + T4 + 0.001)                                   # Timer I = T4
    assert wire.core.pending == 0 and wire.core.get_timer() is None


def test_invite_without_ack_ends_on_timer_h() -> None:
    wire = Wire()
    assert wire.receive(request("INVITE"), status=486)
    wire.run_until(64 * T1 - 0.001)
    assert wire.core.pending == 1
    resent = len(wire.responses)
    wire.run_until(64 * T1 + 0.001)
    assert wire.core.pending == 0 and len(wire.responses) == resent


# --- client transactions ----------------------------------------------------------------------------

def test_notify_unanswered_is_retransmitted_on_timer_e_then_408_on_timer_f() -> None:
    wire = Wire()
    req = notify()
    got: list[tuple[float, SIPResponse]] = []
    transaction = wire.core.send_request(req, PHONE, 0.0, lambda r: got.append((wire.now, r)))
    assert transaction is not None and transaction.data == req.to_bytes()
    assert wire.core.timer_moved and wire.core.get_timer() == pytest.approx(T1)
    wire.run_until(1.0)
    # E: 0.02, 0.06, 0.14, 0.22, 0.30, 0.38, 0.46 (doubling to T2 = 0.08) -> 7 before F at 0.5
    assert [t for t, _, _ in wire.data] == pytest.approx([0.02, 0.06, 0.14, 0.22, 0.30, 0.38, 0.46])
    assert {(data, dest) for _, data, dest in wire.data} == {(req.to_bytes(), PHONE)}
    assert len(got) == 1 and got[0][0] == pytest.approx(TIMER_F)
    assert got[0][1].status == 408 and got[0][1].reason == "Request Timeout" and got[0][1].call_id == "sub-1"
    assert wire.core.pending == 0 and wire.core.get_timer() is None


def test_notify_provisional_then_final_delivered_once_and_retransmissions_absorbed_until_timer_k() -> None:
    wire = Wire()
    req = notify()
    finals: list[SIPResponse] = []
    provisionals: list[SIPResponse] = []
    wire.core.send_request(req, PHONE, 0.0, finals.append, on_provisional=provisionals.append)
    assert wire.at(0.01).receive_response(build_reply(req, 100), wire.now)
    wire.collect()
    wire.run_until(0.3)                                   # Proceeding: the request every T2 after E's next
    assert [t for t, _, _ in wire.data] == pytest.approx([0.02, 0.10, 0.18, 0.26])
    assert wire.core.receive_response(build_reply(req, 481), wire.now)
    wire.collect()
    assert wire.core.receive_response(build_reply(req, 481), wire.now)   # a duplicate final: absorbed
    wire.collect()
    assert [r.status for r in finals] == [481] and [p.status for p in provisionals] == [100]
    assert wire.core.pending == 0 and wire.core.answered == 1
    # only the key is kept for Timer K: the machine and its request are gone at once
    assert not [o for o in gc.get_referrers(req) if isinstance(o, NonInviteClientTransaction)]
    wire.run_until(0.3 + T4 - 0.001)
    assert wire.core.receive_response(build_reply(req, 481), wire.now)
    wire.run_until(0.3 + T4 + 2 * T1)                     # Timer K (T4) and a sweep
    assert wire.core.answered == 0
    assert not wire.core.receive_response(build_reply(req, 481), wire.now)   # now nothing matches: stray
    assert len(wire.data) == 4 and len(finals) == 1


def test_answered_client_transaction_keeps_only_its_key_for_timer_k() -> None:
    """Was a real-loop test, flaky under load (the answer had to beat Timer E): the clock is ours now."""
    wire = Wire()
    req = notify()
    finals: list[SIPResponse] = []
    wire.core.send_request(req, PHONE, 0.0, finals.append)
    assert wire.at(0.005).receive_response(build_reply(req, 200), wire.now)
    wire.collect()
    assert [r.status for r in finals] == [200] and wire.data == []
    assert wire.core.pending == 0 and wire.core.client_transactions() == [] and wire.core.answered == 1
    assert not [o for o in gc.get_referrers(req) if isinstance(o, NonInviteClientTransaction)]
    assert wire.core.receive_response(build_reply(req, 200), wire.now)      # a retransmitted 200: absorbed
    wire.run_until(0.005 + T4 + 2 * T1)
    assert wire.core.answered == 0 and wire.data == []                       # never retransmitted
    assert not wire.core.receive_response(build_reply(req, 200), wire.now)  # now nothing matches it


def test_notify_over_tcp_is_never_retransmitted_and_times_out_on_timer_f() -> None:
    wire = Wire()
    got: list[SIPResponse] = []
    wire.core.send_request(notify(), Destination("tcp", "192.0.2.10", 5062), 0.0, got.append)
    wire.run_until(1.0)
    assert wire.data == [] and [r.status for r in got] == [408]


def test_transport_error_on_a_retransmission_gives_503_at_once() -> None:
    wire = Wire()
    got: list[tuple[float, int]] = []
    wire.core.send_request(notify(), PHONE, 0.0, lambda r: got.append((wire.now, r.status)))
    wire.fail_sends = True
    wire.run_until(1.0)
    assert got == [(pytest.approx(T1), 503)] and wire.core.pending == 0


def test_transport_error_on_the_first_send_gives_503() -> None:
    wire = Wire()
    got: list[SIPResponse] = []
    transaction = wire.core.send_request(notify(), PHONE, 0.0, got.append)
    assert transaction is not None
    wire.core.transport_error(transaction, 0.0)          # what the adapter reports when the send fails
    wire.collect()
    assert [r.status for r in got] == [503] and wire.core.pending == 0 and wire.core.get_timer() is None


def test_a_branch_in_use_is_refused() -> None:
    wire = Wire()
    wire.core.send_request(notify("z9hG4bK-same"), PHONE, 0.0, lambda r: None, branch="z9hG4bK-same")
    with pytest.raises(TransactionError):
        wire.core.send_request(notify("z9hG4bK-same"), PHONE, 0.0, lambda r: None, branch="z9hG4bK-same")


def test_cancel_forgets_without_answering_and_close_answers_503() -> None:
    wire = Wire()
    got: list[SIPResponse] = []
    first = wire.core.send_request(notify(), PHONE, 0.0, got.append)
    wire.core.send_request(notify(), PHONE, 0.0, got.append)
    assert first is not None and wire.core.pending == 2
    wire.core.cancel(first)
    wire.collect()
    assert got == [] and wire.core.pending == 1
    wire.core.close()
    wire.collect()
    assert [r.status for r in got] == [503] and wire.core.pending == 0 and wire.core.get_timer() is None
    wire.core.send_request(notify(), PHONE, 0.0, got.append)     # closed: refused with a 503
    wire.collect()
    assert [r.status for r in got] == [503, 503]


def test_a_failing_timer_ends_only_its_transaction(caplog: pytest.LogCaptureFixture) -> None:
    wire = Wire()
    broken: list[SIPResponse] = []
    healthy: list[SIPResponse] = []
    transaction = wire.core.send_request(notify(call_id="broken"), PHONE, 0.0, broken.append)
    wire.core.send_request(notify(call_id="healthy"), PHONE, 0.0, healthy.append)
    assert transaction is not None

    def fail(now: float) -> list[object]:
        raise RuntimeError("bug")

    transaction.handle_timer = fail  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR, logger="routescript.transaction"):
        wire.run_until(1.0)
    assert "timer handling failed" in caplog.text
    assert [r.status for r in broken] == [503]                     # its creator is not left waiting
    assert [r.status for r in healthy] == [408] and len(wire.data) == 7   # the other ran as usual


# --- the timer ---------------------------------------------------------------------------------------

def test_get_timer_is_the_earliest_deadline_and_timer_moved_says_when_to_ask_again() -> None:
    core = TransactionCore(TIMERS, route)
    assert core.get_timer() is None and not core.timer_moved
    core.create(request(), UDP_SRC, 0.0)                           # the sweep
    assert core.timer_moved and core.get_timer() == pytest.approx(min(1.0, 2 * T1))
    assert not core.timer_moved
    core.send_request(notify(), PHONE, 0.0, lambda r: None)        # Timer E at T1: earlier
    assert core.timer_moved and core.get_timer() == pytest.approx(T1)
    core.send_request(notify(), PHONE, 0.01, lambda r: None)       # T1 later: the armed timer serves it
    assert not core.timer_moved
    core.handle_timer(T1)
    assert core.timer_moved and core.get_timer() == pytest.approx(0.01 + T1)


def test_pending_counts_live_transactions_as_they_come_and_go() -> None:
    """`pending` is a counter kept by every place a transaction starts or ends: it must always equal
    the live server and client transactions (creation, UDP final, TCP final, TU timeout, client
    answered, client timed out, close)."""
    wire = Wire()
    core = wire.core

    def live() -> int:
        return len(core.server_transactions()) + len(core.client_transactions())

    udp = core.create(request("PUBLISH", "z9hG4bKp1"), UDP_SRC, wire.now)
    tcp = core.create(request("PUBLISH", "z9hG4bKp2"), TCP_SRC, wire.now)
    core.create(request("SUBSCRIBE", "z9hG4bKp3"), UDP_SRC, wire.now)   # left to time out
    assert core.pending == live() == 3
    core.reply(udp, build_reply(udp.request, 200), wire.now)
    core.reply(tcp, build_reply(tcp.request, 200), wire.now)
    wire.collect()
    assert core.pending == live() == 1
    answered = core.send_request(notify(call_id="n1"), PHONE, wire.now, lambda r: None)
    core.send_request(notify(call_id="n2"), PHONE, wire.now, lambda r: None)   # left to time out
    assert answered is not None and core.pending == live() == 3
    assert core.receive_response(build_reply(answered.request, 200), wire.now)
    assert core.pending == live() == 2
    wire.run_until(TIMER_F + 64 * T1 + 1)   # the SUBSCRIBE's TU timeout, the other NOTIFY's Timer F
    assert core.pending == live() == 0
    core.create(request("PUBLISH", "z9hG4bKp4"), UDP_SRC, wire.now)
    core.close()
    assert core.pending == live() == 0


def _reply_with_top_via(req: SIPRequest, status: int, via: str) -> SIPResponse:
    """A response to `req` as a peer wrote it, its top Via line `via`."""
    reply = build_reply(req, status, to_tag="t")
    return parse_message(reply.to_bytes().replace(req.header("via").encode(), via.encode(), 1))


def test_a_response_carrying_our_via_line_matches_without_parsing_it() -> None:
    """The usual response copies our Via line as it was: it matches by the branch read off the text
    (its Via is never parsed); the same response with that line rewritten - spaces, a received added,
    the branch's case - matches as before, by the parsed Via; a foreign branch matches nothing."""
    wire = Wire()
    req = notify()
    finals: list[SIPResponse] = []
    provisionals: list[SIPResponse] = []
    wire.core.send_request(req, PHONE, 0.0, finals.append, on_provisional=provisionals.append)
    ours = req.header("via")
    copied = _reply_with_top_via(req, 180, ours)
    assert wire.core.receive_response(copied, wire.now)
    wire.collect()
    assert provisionals == [copied] and "via" not in copied._cache   # never parsed
    branch = req.via.branch
    assert branch is not None
    rewritten = [ours.replace(";branch=", " ; branch = "), ours + ";received=192.0.2.1",
                 ours.replace(";branch=", ";BRANCH=")]
    for line in rewritten:
        response = _reply_with_top_via(req, 183, line)
        assert wire.core.receive_response(response, wire.now), line
        wire.collect()
        assert provisionals[-1] is response and response.via.branch == branch
    folded = _reply_with_top_via(req, 183, ours + ",SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKup")
    assert wire.core.receive_response(folded, wire.now)   # the Vias folded into one line (SIPp does)
    wire.collect()
    assert provisionals[-1] is folded and "via" not in folded._cache
    spaced = _reply_with_top_via(req, 183, ours + " , SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKup")
    assert wire.core.receive_response(spaced, wire.now)
    wire.collect()
    assert provisionals[-1] is spaced and spaced.via.branch == branch
    foreign = _reply_with_top_via(req, 200, ours.replace(branch, generate_branch()))
    assert not wire.core.receive_response(foreign, wire.now)
    assert wire.core.receive_response(_reply_with_top_via(req, 200, ours), wire.now)
    wire.collect()
    assert [r.status for r in finals] == [200] and len(provisionals) == 6


def test_an_assembled_request_is_matched_by_its_via_line_read_off_its_bytes() -> None:
    """A NOTIFY assembled from parts (not parsed back): its Via line is read off the bytes it was sent
    as, so its 200 matches without parsing the response's Via either."""
    via = f"SIP/2.0/UDP 127.0.0.1:5060;branch={generate_branch()}"
    req = assemble_request("NOTIFY", "sip:bob@192.0.2.10:5062", [
        ("Via", via), ("From", "<sip:alice@127.0.0.1>;tag=srv"), ("To", "<sip:bob@192.0.2.10>;tag=cli"),
        ("Call-ID", "sub-9"), ("CSeq", "1 NOTIFY"), ("Content-Length", "0")], b"")
    wire = Wire()
    finals: list[SIPResponse] = []
    wire.core.send_request(req, PHONE, 0.0, finals.append)
    ok = parse_message(b"SIP/2.0 200 OK\r\nVia: " + via.encode() + b"\r\nFrom: <sip:alice@127.0.0.1>;tag=srv"
                       b"\r\nTo: <sip:bob@192.0.2.10>;tag=cli\r\nCall-ID: sub-9\r\nCSeq: 1 NOTIFY\r\n"
                       b"Content-Length: 0\r\n\r\n")
    assert wire.core.receive_response(ok, wire.now)
    wire.collect()
    assert finals == [ok] and "via" not in ok._cache
