"""The INVITE client transaction, RFC 3261 17.1.1 with RFC 6026's Accepted state - sans-IO. tm's
branches use it.

Over UDP the INVITE is retransmitted on Timer A (T1, doubling, no cap: 17.1.1.2) until a response
comes; Timer B (64*T1, or OpenSIPS's fr_timeout when configured: the wait for the first reply) ends it
with a locally made 408. A 300-699 response is answered here with the ACK of 17.1.1.3 (same branch,
hop by hop), again for each retransmission of it, until Timer D (32 s over UDP, 0 over TCP). Every 2xx
is handed up - the first as the final response, later ones (retransmissions, other forks' 2xx) as
`Deliver(final=False)` - so the proxy forwards them all (RFC 6026 7.2); Timer M (64*T1) ends it.
TransactionCore forgets one at its first 2xx instead: the later 2xx then match nothing and are forwarded
statelessly by their Via (core/relay.py), as RFC 3261 proxies and OpenSIPS do.

Proceeding has no RFC timer (Timer C belongs to the proxy: tm's fr_inv_timeout); it is bounded by
TimerConfig.invite_tu_timeout (a 408) so that a branch whose CANCEL is never answered cannot leak.
"""

from __future__ import annotations

from routescript.sip import Destination, SIPRequest, SIPResponse, build_reply
from routescript.transaction.keys import ClientKey
from routescript.transaction.machine import Action, Deliver, Machine, Transmit
from routescript.transaction.states import INVITE_CLIENT, Effect, Event, State
from routescript.transaction.timers import TimerConfig

TIMER_D_UDP = 32.0   # RFC 3261 17.1.1.2: "at least 32 seconds for unreliable transports"


def ack_for(request: SIPRequest, response: SIPResponse) -> SIPRequest:
    """The ACK for a 300-699 response to `request` (RFC 3261 17.1.1.3): the INVITE's Request-URI,
    Call-ID, From and top Via (so it has the INVITE's branch), the response's To (with its tag), CSeq
    with the INVITE's number and method ACK, the INVITE's Route lines, Max-Forwards 70, no body."""
    headers: list[tuple[str, str]] = [("Via", str(request.via))]
    for route in request.header_all("route"):
        headers.append(("Route", route))
    headers += [("From", request.header("from") or ""), ("To", response.header("to") or ""),
                ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.number} ACK"),
                ("Max-Forwards", "70"), ("Content-Length", "0")]
    return SIPRequest("ACK", request.ruri, headers)


class InviteClientTransaction(Machine):
    """`request` (an INVITE) is sent to `destination`; `data` is it on the wire, made once. The caller
    transmits it once at creation; the machine asks for every retransmission and for the ACKs."""

    TABLE = INVITE_CLIENT
    INITIAL = State.CALLING
    is_invite = True

    def __init__(self, request: SIPRequest, destination: Destination | None = None, *, reliable: bool,
                 timers: TimerConfig, now: float, key: ClientKey | None = None,
                 fr_timeout: float | None = None) -> None:
        # fr_timeout: this transaction's own (tm's t_set_fr), else the configured one
        timer_b = now + (fr_timeout or timers.fr_timeout)
        super().__init__(request, reliable=reliable, timers=timers, now=now,
                         deadlines={Event.TIMER_B: timer_b} if reliable else
                         {Event.TIMER_A: now + timers.t1, Event.TIMER_B: timer_b})
        self.destination = destination
        self.key = key
        self.data = request.to_bytes()
        self.final_response: SIPResponse | None = None
        self.local_final = False    # the final response was made here (408, 503)
        self.retransmissions = 0
        self._ack: SIPRequest | None = None
        if not reliable:
            self._intervals[Event.TIMER_A] = timers.t1

    def receive_response(self, response: SIPResponse, now: float) -> list[Action]:
        """A response matching this transaction arrived."""
        status = response.status
        event = Event.PROVISIONAL if status < 200 else Event.SUCCESS if status < 300 else Event.FINAL
        return self._event(event, now, response)

    def _do(self, effect: Effect, event: Event, response: SIPResponse | None, now: float,
            out: list[Action]) -> None:
        if effect is Effect.RESEND:
            self.retransmissions += 1
            out.append(Transmit(self.request))
            interval = 2 * self._intervals[Event.TIMER_A]   # 17.1.1.2: doubled each time
            self._intervals[Event.TIMER_A] = interval
            self._arm(Event.TIMER_A, interval, now)
        elif effect is Effect.DELIVER and response is not None:
            first_final = response.status >= 200 and self.final_response is None
            if first_final:
                self.final_response = response
            out.append(Deliver(response, final=first_final))
        elif effect is Effect.ACK and response is not None:
            self.final_response = response
            self._ack = ack_for(self.request, response)
            out.append(Transmit(self._ack))
            out.append(Deliver(response, final=True))
        elif effect is Effect.REACK and self._ack is not None:
            out.append(Transmit(self._ack))
        elif effect is Effect.TIMEOUT:
            self._deliver_local(408, "Request Timeout", out)
        elif effect is Effect.FAIL:
            self._deliver_local(503, "Service Unavailable", out)

    def _deliver_local(self, status: int, reason: str, out: list[Action]) -> None:
        if self.final_response is not None:
            return   # a TU timeout after the final response was handed up: nothing more to say
        response = build_reply(self.request, status, reason)
        self.final_response = response
        self.local_final = True
        out.append(Deliver(response, final=True, local=True))

    def _on_enter(self, state: State, now: float) -> None:
        # Each state's timers replace the previous state's (A and B stop at the first response).
        if state is State.PROCEEDING:
            self._deadlines = {Event.TU_TIMEOUT: now + self.timers.invite_tu_timeout}
        elif state is State.COMPLETED:
            self._deadlines = {Event.TIMER_D: now + (0.0 if self.reliable else TIMER_D_UDP)}
        elif state is State.ACCEPTED:
            self._deadlines = {Event.TIMER_M: now + 64 * self.timers.t1}
        self._intervals = {}
