"""The sans-IO transaction machines with a fake clock: schedules, timeouts, absorption, delivery once."""

from __future__ import annotations

import pytest

from routescript.sip import build_reply, build_request, parse_message
from routescript.transaction import (
    Deliver,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    TimerConfig,
    TransactionError,
    Transmit,
    server_transaction,
)
from routescript.transaction.states import INVITE_SERVER, NON_INVITE_CLIENT, NON_INVITE_SERVER, TU_EVENTS

T = TimerConfig()  # T1 0.5, T2 4, T4 5


def make_request(method: str = "NOTIFY", branch: str = "z9hG4bKabc", host: str = "192.0.2.1:5060"):
    return build_request(method, "sip:bob@192.0.2.9", [
        ("Via", f"SIP/2.0/UDP {host};branch={branch}"),
        ("From", "<sip:alice@example.com>;tag=f1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1"),
        ("CSeq", f"1 {method}"),
    ])


def run_clock(machine, until: float):
    """Advance a fake clock deadline by deadline up to `until`; return [(time, action)]."""
    out = []
    for _ in range(1000):
        deadline = machine.next_deadline()
        if deadline is None or deadline > until:
            return out
        out += [(deadline, a) for a in machine.handle_timer(deadline)]
    raise AssertionError("clock loop did not settle")


# --- non-INVITE client (NOTIFY) ---------------------------------------------------------------------

def test_client_udp_retransmits_on_timer_e_doubling_to_t2_then_408_on_timer_f():
    req = make_request()
    ct = NonInviteClientTransaction(req, reliable=False, timers=T, now=0.0)
    events = run_clock(ct, 100.0)
    sends = [t for t, a in events if isinstance(a, Transmit)]
    # E: 0.5, then MIN(2^n*T1, T2): 1.5, 3.5, 7.5, then every T2 up to F = 64*T1 = 32
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    delivered = [(t, a) for t, a in events if isinstance(a, Deliver)]
    assert len(delivered) == 1
    t, d = delivered[0]
    assert t == 32.0 and d.final and d.local and d.response.status == 408
    assert d.response.reason == "Request Timeout"
    assert d.response.call_id == "call-1"
    assert ct.state is State.TERMINATED and ct.next_deadline() is None


def test_client_timer_f_configurable_like_fr_timeout():
    ct = NonInviteClientTransaction(make_request(), reliable=False, timers=TimerConfig(timer_f=5.0), now=10.0)
    events = run_clock(ct, 100.0)
    assert [t for t, a in events if isinstance(a, Transmit)] == [10.5, 11.5, 13.5]
    assert [(t, a.response.status) for t, a in events if isinstance(a, Deliver)] == [(15.0, 408)]


def test_client_provisional_moves_to_proceeding_and_retransmits_every_t2():
    req = make_request()
    ct = NonInviteClientTransaction(req, reliable=False, timers=T, now=0.0)
    assert ct.handle_timer(0.5) == [Transmit(req)]
    out = ct.receive_response(build_reply(req, 100), 0.7)
    assert ct.state is State.PROCEEDING
    assert len(out) == 1 and isinstance(out[0], Deliver) and not out[0].final
    events = run_clock(ct, 12.0)
    # the running E (due at 1.5) fires, then every T2
    assert [t for t, a in events if isinstance(a, Transmit)] == [1.5, 5.5, 9.5]
    # Timer F is not restarted by the 1xx
    assert ct.next_deadline() is not None and ct.next_deadline() <= 32.0


def test_client_final_delivered_once_and_retransmissions_absorbed_until_timer_k():
    req = make_request()
    ct = NonInviteClientTransaction(req, reliable=False, timers=T, now=0.0)
    ok = build_reply(req, 200)
    out = ct.receive_response(ok, 0.2)
    assert out == [Deliver(ok, final=True)]
    assert ct.state is State.COMPLETED
    assert ct.receive_response(ok, 0.3) == []            # retransmitted 200: absorbed
    assert ct.receive_response(build_reply(req, 180), 0.4) == []
    assert ct.next_deadline() == pytest.approx(0.2 + T.t4)  # Timer K, no E/F any more
    assert run_clock(ct, 100.0) == []                    # nothing sent or delivered again
    assert ct.state is State.TERMINATED


def test_client_tcp_never_retransmits_and_ends_at_once_after_final():
    req = make_request()
    ct = NonInviteClientTransaction(req, reliable=True, timers=T, now=0.0)
    assert ct.next_deadline() == 32.0                    # only Timer F
    out = ct.receive_response(build_reply(req, 481), 1.0)
    assert [d.response.status for d in out] == [481]
    assert ct.state is State.TERMINATED                  # Timer K = 0 on reliable transports


def test_client_tcp_timeout_is_408_without_retransmissions():
    ct = NonInviteClientTransaction(make_request(), reliable=True, timers=T, now=0.0)
    events = run_clock(ct, 100.0)
    assert [type(a) for _, a in events] == [Deliver]
    assert events[0][1].response.status == 408


def test_client_transport_error_gives_local_503_once():
    ct = NonInviteClientTransaction(make_request(), reliable=False, timers=T, now=0.0)
    out = ct.transport_error(0.1)
    assert len(out) == 1 and out[0].local and out[0].response.status == 503
    assert ct.state is State.TERMINATED
    assert ct.transport_error(0.2) == []
    assert ct.receive_response(build_reply(make_request(), 200), 0.3) == []


# --- non-INVITE server ------------------------------------------------------------------------------

def test_server_absorbs_retransmission_while_trying_and_resends_last_response():
    req = make_request("PUBLISH")
    st = NonInviteServerTransaction(req, reliable=False, timers=T, now=0.0)
    assert st.state is State.TRYING
    assert st.receive_request(0.5) == []                 # script still running: swallowed
    trying = build_reply(req, 100)
    assert st.send_response(trying, 0.6) == [Transmit(trying)]
    assert st.receive_request(1.0) == [Transmit(trying)]  # Proceeding: resend the provisional
    ok = build_reply(req, 200, to_tag="x1")
    assert st.send_response(ok, 1.1) == [Transmit(ok)]
    assert st.state is State.COMPLETED
    assert st.receive_request(2.0) == [Transmit(ok)]      # the same 200 (same To tag), not a new one
    assert st.next_deadline() == pytest.approx(1.1 + 64 * T.t1)  # Timer J
    assert run_clock(st, 100.0) == []
    assert st.state is State.TERMINATED


def test_server_second_final_reply_is_our_error():
    req = make_request("SUBSCRIBE")
    st = NonInviteServerTransaction(req, reliable=False, timers=T, now=0.0)
    st.send_response(build_reply(req, 200), 0.0)
    with pytest.raises(TransactionError, match="Completed"):
        st.send_response(build_reply(req, 500), 0.1)


def test_server_tcp_terminates_right_after_final():
    req = make_request("PUBLISH")
    st = NonInviteServerTransaction(req, reliable=True, timers=T, now=0.0)
    st.send_response(build_reply(req, 200), 0.0)
    assert st.state is State.TERMINATED                  # Timer J = 0


def test_server_without_reply_is_bounded():
    st = NonInviteServerTransaction(make_request("PUBLISH"), reliable=False, timers=T, now=0.0)
    assert st.next_deadline() == 32.0
    run_clock(st, 100.0)
    assert st.state is State.TERMINATED


def test_keep_provisional_only_where_the_table_keeps_the_state_and_no_timer_is_due():
    req = make_request("PUBLISH")
    st = NonInviteServerTransaction(req, reliable=False, timers=T, now=0.0)
    trying, ringing = build_reply(req, 100), build_reply(req, 180)
    assert not st.keep_provisional(trying, 0.1)          # Trying -> Proceeding: the table walk's
    assert st.last_response is None and st.state is State.TRYING
    st.send_response(trying, 0.1)
    assert st.keep_provisional(ringing, 0.2)             # Proceeding -> Proceeding, SEND
    assert st.last_response is ringing and st.state is State.PROCEEDING
    assert st.receive_request(0.3) == [Transmit(ringing)]
    assert not st.keep_provisional(trying, 32.0)         # the TU timeout is due: the walk fires it
    assert st.last_response is ringing
    st.send_response(build_reply(req, 200, to_tag="x1"), 1.0)
    assert not st.keep_provisional(trying, 1.1)          # Completed: the walk refuses it
    invite = make_request("INVITE")
    ist = server_transaction(invite, reliable=False, timers=T, now=0.0)
    assert ist.keep_provisional(trying, 0.0) and ist.receive_request(0.1) == [Transmit(trying)]


# --- INVITE server ----------------------------------------------------------------------------------

def test_invite_error_response_retransmitted_on_timer_g_until_timer_h():
    req = make_request("INVITE")
    st = server_transaction(req, reliable=False, timers=T, now=0.0)
    assert isinstance(st, InviteServerTransaction) and st.state is State.PROCEEDING
    assert st.receive_request(0.1) == []                 # no provisional yet: nothing to resend
    busy = build_reply(req, 486)
    assert st.send_response(busy, 1.0) == [Transmit(busy)]
    events = run_clock(st, 100.0)
    assert [t for t, a in events] == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert st.state is State.TERMINATED                  # Timer H at 1 + 32 = 33


def test_invite_ack_confirms_and_stops_retransmissions():
    req = make_request("INVITE")
    st = server_transaction(req, reliable=False, timers=T, now=0.0)
    busy = build_reply(req, 486)
    st.send_response(busy, 0.0)
    assert st.handle_timer(0.5) == [Transmit(busy)]
    assert st.receive_ack(0.8) == []
    assert st.state is State.CONFIRMED
    assert st.receive_ack(0.9) == [] and st.receive_request(1.0) == []
    assert st.next_deadline() == pytest.approx(0.8 + T.t4)  # Timer I only
    assert run_clock(st, 100.0) == []
    assert st.state is State.TERMINATED


def test_invite_2xx_accepted_absorbs_retransmitted_invite():
    req = make_request("INVITE")
    st = server_transaction(req, reliable=False, timers=T, now=0.0)
    ringing = build_reply(req, 180)
    st.send_response(ringing, 0.0)
    assert st.receive_request(0.2) == [Transmit(ringing)]
    ok = build_reply(req, 200)
    st.send_response(ok, 0.3)
    assert st.state is State.ACCEPTED
    assert st.receive_request(0.4) == []
    run_clock(st, 100.0)
    assert st.state is State.TERMINATED


def test_invite_over_tcp_has_no_timer_g():
    req = make_request("INVITE")
    st = server_transaction(req, reliable=True, timers=T, now=0.0)
    st.send_response(build_reply(req, 603), 0.0)
    assert st.next_deadline() == 32.0                    # Timer H only
    st.receive_ack(1.0)
    assert st.state is State.TERMINATED                  # Timer I = 0


# --- the tables -------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", [NON_INVITE_SERVER, INVITE_SERVER, NON_INVITE_CLIENT])
def test_tables_never_leave_terminated(table):
    assert not [k for k in table if k[0] is State.TERMINATED]


def test_every_tu_event_in_terminated_raises():
    req = make_request("PUBLISH")
    st = NonInviteServerTransaction(req, reliable=True, timers=T, now=0.0)
    st.send_response(build_reply(req, 200), 0.0)
    for status in (100, 200, 404):
        with pytest.raises(TransactionError):
            st.send_response(build_reply(req, status), 1.0)
    assert TU_EVENTS  # the events that raise are the TU's own


def test_timer_config_validates():
    with pytest.raises(ValueError):
        TimerConfig(t1=0)
    with pytest.raises(ValueError):
        TimerConfig(t1=1.0, t2=0.5)
    with pytest.raises(ValueError):
        TimerConfig(timer_f=0)
    assert TimerConfig(t1=0.1).fr_timeout == pytest.approx(6.4)
    assert TimerConfig(timer_f=5).fr_timeout == 5


def test_parsed_requests_work_too():
    raw = (b"PUBLISH sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK9\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 3 PUBLISH\r\n"
           b"Content-Length: 0\r\n\r\n")
    req = parse_message(raw)
    st = NonInviteServerTransaction(req, reliable=False, timers=T, now=0.0)
    out = st.send_response(build_reply(req, 412), 0.0)
    assert out[0].message.to_bytes().startswith(b"SIP/2.0 412 ")
    assert st.replied
