"""Every transaction state transition, as data (RFC 3261 section 17; RFC 6026 for INVITE 2xx).

Each table maps (state, event) -> (next state, effect). The machines in server.py and client.py look
the pair up and carry out the effect; a pair that is missing is either ignored (events from the
network: a late retransmission is not an error) or a TransactionError (events from our own code, e.g.
a second final reply: a bug in the caller).

Effects:
  SEND      pass the TU's response (server) to the transport and remember it as the last one
  RESEND    retransmit the last response (server) / the request (client)
  DELIVER   hand the response to the TU (client)
  TIMEOUT   hand a locally made 408 to the TU (client, Timer F)
  FAIL      hand a locally made 503 to the TU (client, transport error)
  ABSORB    nothing to do (a retransmission swallowed by the transaction)
  ACK       INVITE client: send the ACK for a 300-699 response (RFC 3261 17.1.1.3), then DELIVER
  REACK     INVITE client: send that ACK again (a retransmitted 300-699 response)
  NONE      only the state changes
"""

from __future__ import annotations

from enum import Enum


class _FastHashEnum(Enum):
    """Members hash by identity (they are singletons): Enum's own __hash__ is a Python function, and
    these are the keys of the transition tables and timer dicts - a dozen lookups per transaction."""

    __hash__ = object.__hash__


class State(_FastHashEnum):
    CALLING = "Calling"        # INVITE client transaction, before any response
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"      # RFC 6026 7.1: INVITE server transaction after a 2xx
    TERMINATED = "Terminated"


class Event(_FastHashEnum):
    # from the network
    REQUEST = "request retransmission"
    ACK = "ACK"
    PROVISIONAL = "1xx"         # server: the TU sends one; client: one arrived
    SUCCESS = "2xx"             # INVITE server only: the TU sends a 2xx
    # server: the TU sends 2xx-6xx (non-INVITE) / 3xx-6xx (INVITE); client: one arrived
    FINAL = "final"
    TRANSPORT_ERROR = "transport error"
    # timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_M = "Timer M"         # RFC 6026 8.4: INVITE client, Accepted
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TU_TIMEOUT = "no final reply from the TU"   # our bound, see TimerConfig


class Effect(_FastHashEnum):
    SEND = "send"
    RESEND = "resend"
    DELIVER = "deliver"
    TIMEOUT = "timeout"
    FAIL = "fail"
    ABSORB = "absorb"
    ACK = "ack"
    REACK = "reack"
    NONE = "none"


S, E, X = State, Event, Effect
Table = dict[tuple[State, Event], tuple[State, Effect]]

# Events a server transaction gets from our own code (the script answering): a missing entry for one
# of these is a TransactionError.
TU_EVENTS = frozenset({E.PROVISIONAL, E.SUCCESS, E.FINAL})

# RFC 3261 17.2.2, figure 8: non-INVITE server transaction.
NON_INVITE_SERVER: Table = {
    (S.TRYING, E.REQUEST): (S.TRYING, X.ABSORB),            # "any retransmissions ... discarded"
    (S.TRYING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
    (S.TRYING, E.FINAL): (S.COMPLETED, X.SEND),
    (S.TRYING, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
    (S.TRYING, E.TU_TIMEOUT): (S.TERMINATED, X.NONE),
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, X.RESEND),    # resend the most recent provisional
    (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
    (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.SEND),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
    (S.PROCEEDING, E.TU_TIMEOUT): (S.TERMINATED, X.NONE),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, X.RESEND),      # resend the final response
    (S.COMPLETED, E.TIMER_J): (S.TERMINATED, X.NONE),
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
}

# RFC 3261 17.2.1, figure 7, with RFC 6026 7.1's Accepted state: INVITE server transaction.
# 100 Trying is not sent by the transaction: the script decides (OpenSIPS t_newtran does not either).
INVITE_SERVER: Table = {
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, X.RESEND),    # resend the last provisional, if any
    (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.SEND),
    (S.PROCEEDING, E.SUCCESS): (S.ACCEPTED, X.SEND),
    (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.SEND),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
    (S.PROCEEDING, E.TU_TIMEOUT): (S.TERMINATED, X.NONE),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, X.RESEND),
    (S.COMPLETED, E.TIMER_G): (S.COMPLETED, X.RESEND),
    (S.COMPLETED, E.ACK): (S.CONFIRMED, X.ABSORB),
    (S.COMPLETED, E.TIMER_H): (S.TERMINATED, X.NONE),        # the ACK never came
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
    (S.CONFIRMED, E.REQUEST): (S.CONFIRMED, X.ABSORB),
    (S.CONFIRMED, E.ACK): (S.CONFIRMED, X.ABSORB),
    (S.CONFIRMED, E.TIMER_I): (S.TERMINATED, X.NONE),
    (S.ACCEPTED, E.REQUEST): (S.ACCEPTED, X.ABSORB),
    (S.ACCEPTED, E.SUCCESS): (S.ACCEPTED, X.SEND),           # the TU retransmitting its 2xx
    (S.ACCEPTED, E.TIMER_L): (S.TERMINATED, X.NONE),
}

# RFC 3261 17.1.2.2, figure 6: non-INVITE client transaction (NOTIFY).
NON_INVITE_CLIENT: Table = {
    (S.TRYING, E.TIMER_E): (S.TRYING, X.RESEND),
    (S.TRYING, E.TIMER_F): (S.TERMINATED, X.TIMEOUT),
    (S.TRYING, E.PROVISIONAL): (S.PROCEEDING, X.DELIVER),
    (S.TRYING, E.FINAL): (S.COMPLETED, X.DELIVER),
    (S.TRYING, E.TRANSPORT_ERROR): (S.TERMINATED, X.FAIL),
    (S.PROCEEDING, E.TIMER_E): (S.PROCEEDING, X.RESEND),
    (S.PROCEEDING, E.TIMER_F): (S.TERMINATED, X.TIMEOUT),
    (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.DELIVER),
    (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.DELIVER),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, X.FAIL),
    (S.COMPLETED, E.PROVISIONAL): (S.COMPLETED, X.ABSORB),
    (S.COMPLETED, E.FINAL): (S.COMPLETED, X.ABSORB),          # final response delivered once
    (S.COMPLETED, E.TIMER_K): (S.TERMINATED, X.NONE),
}

# RFC 3261 17.1.1.2, figure 5, with RFC 6026 7.2's Accepted state: INVITE client transaction (tm's
# branches). SUCCESS is a 2xx received, FINAL a 300-699. Every 2xx is handed up, retransmissions and
# other forks' 2xx included (RFC 6026 7.2: a proxy forwards them all). RFC 3261 has no timer in
# Proceeding (Timer C is the proxy's, tm's fr_inv_timeout); TU_TIMEOUT bounds it here so that a branch
# whose CANCEL is never answered cannot leak (STYLE 7).
INVITE_CLIENT: Table = {
    (S.CALLING, E.TIMER_A): (S.CALLING, X.RESEND),
    (S.CALLING, E.TIMER_B): (S.TERMINATED, X.TIMEOUT),
    (S.CALLING, E.PROVISIONAL): (S.PROCEEDING, X.DELIVER),
    (S.CALLING, E.SUCCESS): (S.ACCEPTED, X.DELIVER),
    (S.CALLING, E.FINAL): (S.COMPLETED, X.ACK),
    (S.CALLING, E.TRANSPORT_ERROR): (S.TERMINATED, X.FAIL),
    (S.PROCEEDING, E.PROVISIONAL): (S.PROCEEDING, X.DELIVER),
    (S.PROCEEDING, E.SUCCESS): (S.ACCEPTED, X.DELIVER),
    (S.PROCEEDING, E.FINAL): (S.COMPLETED, X.ACK),
    (S.PROCEEDING, E.TU_TIMEOUT): (S.TERMINATED, X.TIMEOUT),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, X.FAIL),
    (S.ACCEPTED, E.SUCCESS): (S.ACCEPTED, X.DELIVER),
    (S.ACCEPTED, E.PROVISIONAL): (S.ACCEPTED, X.ABSORB),
    (S.ACCEPTED, E.FINAL): (S.ACCEPTED, X.ABSORB),
    (S.ACCEPTED, E.TIMER_M): (S.TERMINATED, X.NONE),
    (S.COMPLETED, E.FINAL): (S.COMPLETED, X.REACK),
    (S.COMPLETED, E.PROVISIONAL): (S.COMPLETED, X.ABSORB),
    (S.COMPLETED, E.SUCCESS): (S.COMPLETED, X.ABSORB),
    (S.COMPLETED, E.TIMER_D): (S.TERMINATED, X.NONE),
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, X.NONE),
}
