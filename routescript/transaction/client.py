"""The non-INVITE client transaction, RFC 3261 17.1.2 - sans-IO. This is what NOTIFY uses.

Over UDP the request is retransmitted on Timer E (T1, doubling up to T2; every T2 once a provisional
came); over reliable transports never. Timer F (64*T1, or OpenSIPS's fr_timeout when configured) ends it
with a locally made 408; a transport error ends it with a locally made 503. The final response is
delivered to the TU exactly once; later copies are absorbed until Timer K.

Choice: a provisional response does not restart Timer F (RFC 3261 17.1.2.2: Timer F runs from the
request; OpenSIPS's fr_timeout for non-INVITE behaves the same). It moves the transaction to Proceeding,
where the request is retransmitted every T2 until the final response.
"""

from __future__ import annotations

from routescript.sip import Destination, SIPRequest, SIPResponse, build_reply
from routescript.transaction.keys import ClientKey
from routescript.transaction.machine import Action, Deliver, Machine, Transmit
from routescript.transaction.states import NON_INVITE_CLIENT, Effect, Event, State
from routescript.transaction.timers import TimerConfig


class NonInviteClientTransaction(Machine):
    """`request` is sent to `destination`; `data` is the request on the wire, made once. The caller
    transmits it once at creation; the machine asks for every retransmission."""

    TABLE = NON_INVITE_CLIENT
    INITIAL = State.TRYING
    is_invite = False

    def __init__(self, request: SIPRequest, destination: Destination | None = None, *, reliable: bool,
                 timers: TimerConfig, now: float, key: ClientKey | None = None,
                 fr_timeout: float | None = None) -> None:
        # Trying's timers armed with the machine: Timer E (UDP only) before Timer F, as ties fire in
        # arming order.
        # fr_timeout: this transaction's own (tm's t_set_fr), else the configured one
        timer_f = now + (fr_timeout or timers.fr_timeout)
        super().__init__(request, reliable=reliable, timers=timers, now=now,
                         deadlines={Event.TIMER_F: timer_f} if reliable else
                         {Event.TIMER_E: now + timers.t1, Event.TIMER_F: timer_f})
        self.destination = destination
        self.key = key
        self.data = request.to_bytes()
        self.final_response: SIPResponse | None = None
        self.local_final = False    # the final response was made here (408, 503)
        self.retransmissions = 0
        if not reliable:
            self._intervals[Event.TIMER_E] = timers.t1

    def receive_response(self, response: SIPResponse, now: float) -> list[Action]:
        """A response matching this transaction arrived."""
        event = Event.PROVISIONAL if response.status < 200 else Event.FINAL
        return self._event(event, now, response)

    def _do(self, effect: Effect, event: Event, response: SIPResponse | None, now: float,
            out: list[Action]) -> None:
        if effect is Effect.RESEND:
            self.retransmissions += 1
            out.append(Transmit(self.request))
            # 17.1.2.2: MIN(2^n*T1, T2) in Trying; T2 in Proceeding.
            if self.state is State.TRYING:
                interval = min(2 * self._intervals[Event.TIMER_E], self.timers.t2)
            else:
                interval = self.timers.t2
            self._intervals[Event.TIMER_E] = interval
            self._arm(Event.TIMER_E, interval, now)
        elif effect is Effect.DELIVER and response is not None:
            final = response.status >= 200
            if final:
                self.final_response = response
            out.append(Deliver(response, final=final))
        elif effect is Effect.TIMEOUT:
            self._deliver_local(408, "Request Timeout", out)
        elif effect is Effect.FAIL:
            self._deliver_local(503, "Service Unavailable", out)

    def _deliver_local(self, status: int, reason: str, out: list[Action]) -> None:
        response = build_reply(self.request, status, reason)
        self.final_response = response
        self.local_final = True
        out.append(Deliver(response, final=True, local=True))

    def _on_enter(self, state: State, now: float) -> None:
        # Entering Proceeding leaves the running Timer E alone; its next firing re-arms it with T2.
        if state is State.COMPLETED:
            # Completed's one timer replaces Trying's and Proceeding's (E, F): a new deadline list
            self._deadlines = {Event.TIMER_K: now + self.timers.timer_k(self.reliable)}
            self._intervals = {}
