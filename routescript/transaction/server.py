"""Server transactions, RFC 3261 17.2 - sans-IO.

They absorb retransmissions of the request (resending the last response) and retransmit the final
response of an INVITE until the ACK comes. The TU (the script) decides every response; nothing is sent
on its own (no automatic 100 Trying).
"""

from __future__ import annotations

from collections.abc import Callable

from routescript.sip import SIPRequest, SIPResponse, Source
from routescript.transaction.keys import ServerKey
from routescript.transaction.machine import Action, Machine, Transmit
from routescript.transaction.states import INVITE_SERVER, NON_INVITE_SERVER, TU_EVENTS, Effect, Event, State
from routescript.transaction.timers import TimerConfig


class ServerTransaction(Machine):
    """A server transaction: `request` that created it, `source` it came from, `key` it is matched
    by, `last_response` sent so far."""

    TU_EVENTS = TU_EVENTS

    def __init__(self, request: SIPRequest, source: Source | None = None, *, reliable: bool,
                 timers: TimerConfig, now: float, key: ServerKey | None = None,
                 tu_timeout: float | None = None) -> None:
        """`tu_timeout`: how long the TU may take to answer (TimerConfig.tu_timeout, when the caller
        already knows it: the core asks it once, not per request)."""
        if tu_timeout is None:
            tu_timeout = timers.tu_timeout(self.is_invite)
        super().__init__(request, reliable=reliable, timers=timers, now=now,
                         deadlines={Event.TU_TIMEOUT: now + tu_timeout})
        self.source = source
        self.key = key
        self.last_response: SIPResponse | None = None
        # Called with every response the TU sends in it, after it went out (OpenSIPS's
        # TMCB_RESPONSE_OUT): the dialog module follows its initial INVITE's replies this way. The
        # transaction layer calls them (TransactionLayer.reply) and logs what they raise.
        self.reply_hooks: list[Callable[[SIPResponse], None]] | None = None
        # What the hooks see of the response they are called with: True when it came from a branch (tm
        # relayed it), False when it was made here (t_reply, tm's own 408/487) - OpenSIPS's FAKED_REPLY.
        self.relayed_reply = False
        # Called by tm when a round of its branches ended without a 2xx, before failure_route runs
        # (OpenSIPS's TMCB_ON_FAILURE), with the best failure and whether it was made here (a branch's
        # 408 on fr_inv_timeout): acc reports a missed call at that moment, as OpenSIPS does.
        self.failure_hooks: list[Callable[[SIPResponse, bool], None]] | None = None

    is_invite = False

    @property
    def method(self) -> str:
        return str(self.request.method)

    @property
    def replied(self) -> bool:
        """A final response was sent."""
        return self.last_response is not None and self.last_response.status >= 200

    def receive_request(self, now: float) -> list[Action]:
        """A retransmission of the request arrived."""
        return self._event(Event.REQUEST, now)

    def receive_ack(self, now: float) -> list[Action]:
        """An ACK matching this (INVITE) transaction arrived."""
        return self._event(Event.ACK, now)

    def send_response(self, response: SIPResponse, now: float) -> list[Action]:
        """The TU answers. Raises TransactionError when the state does not allow it (a second final
        response, a response after the transaction ended)."""
        return self._event(self._classify(response.status), now, response)

    def _classify(self, status: int) -> Event:
        return Event.PROVISIONAL if status < 200 else Event.FINAL

    def keep_provisional(self, response: SIPResponse, now: float) -> bool:
        """The TU's 1xx `response` in one step when the table's row for it keeps the state and sends
        (Proceeding, RFC 3261 17.2.1/17.2.2): it becomes the last response, which a retransmitted
        request gets again, and the caller sends it. The row changes neither the state nor a timer, so
        there is no action list to make. False, with nothing done, when the row is another one (Trying
        -> Proceeding, a refusal) or a timer is already due at `now`: then send_response walks the table."""
        state = self.state
        if self.TABLE.get((state, Event.PROVISIONAL)) != (state, Effect.SEND):
            return False
        for deadline in self._deadlines.values():
            if deadline <= now:
                return False
        self.last_response = response
        return True

    def complete_into_table(self, response: SIPResponse) -> None:
        """The final `response` of a non-INVITE transaction the core moves at once to its completed
        table (UDP: the table keeps the bytes and runs Timer J): the table's FINAL row (Trying/Proceeding
        -> Completed, RFC 3261 17.2.2) without arming timers here; the caller sends the response. Raises
        TransactionError when the state does not allow a final response, as send_response does."""
        self._transition(Event.FINAL)
        self.last_response = response
        self._deadlines = {}   # the TU timeout, its only timer (Timer J is the table's)

    def _do(self, effect: Effect, event: Event, response: SIPResponse | None, now: float,
            out: list[Action]) -> None:
        if effect is Effect.SEND and response is not None:
            self.last_response = response
            out.append(Transmit(response))
        elif effect is Effect.RESEND and self.last_response is not None:
            out.append(Transmit(self.last_response))
        if event is Event.TIMER_G and self.state is State.COMPLETED:
            interval = min(2 * self._intervals[Event.TIMER_G], self.timers.t2)
            self._intervals[Event.TIMER_G] = interval
            self._arm(Event.TIMER_G, interval, now)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.2 (figure 8)."""

    TABLE = NON_INVITE_SERVER
    INITIAL = State.TRYING

    def _on_enter(self, state: State, now: float) -> None:
        if state is State.COMPLETED:   # Timer J replaces the TU timeout: a new deadline list
            self._deadlines = {Event.TIMER_J: now + self.timers.timer_j(self.reliable)}


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.1 (figure 7) with RFC 6026's Accepted state (absorbs INVITE retransmissions after
    a 2xx instead of handing them to the script again)."""

    TABLE = INVITE_SERVER
    INITIAL = State.PROCEEDING
    is_invite = True

    def _classify(self, status: int) -> Event:
        if status < 200:
            return Event.PROVISIONAL
        return Event.SUCCESS if status < 300 else Event.FINAL

    def _on_enter(self, state: State, now: float) -> None:
        if state is State.COMPLETED:
            self._cancel(Event.TU_TIMEOUT)
            if not self.reliable:
                self._intervals[Event.TIMER_G] = self.timers.t1
                self._arm(Event.TIMER_G, self.timers.t1, now)
            self._arm(Event.TIMER_H, self.timers.timer_h, now)
        elif state is State.CONFIRMED:
            self._cancel(Event.TIMER_G, Event.TIMER_H)
            self._arm(Event.TIMER_I, self.timers.timer_i(self.reliable), now)
        elif state is State.ACCEPTED:
            self._cancel(Event.TU_TIMEOUT)
            self._arm(Event.TIMER_L, self.timers.timer_l, now)


def server_transaction(request: SIPRequest, source: Source | None = None, *, reliable: bool,
                       timers: TimerConfig, now: float, key: ServerKey | None = None) -> ServerTransaction:
    """The right server transaction for `request` (INVITE or not)."""
    cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    return cls(request, source, reliable=reliable, timers=timers, now=now, key=key)
