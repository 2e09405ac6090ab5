"""What the sans-IO transaction machines share: named timers with deadlines, the table walk, outputs.

No clock and no I/O here: every call takes `now` (seconds, any monotonic origin) and returns what the
caller must do (`Transmit`, `Deliver`). `next_deadline()` says when `handle_timer(now)` is due next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from routescript.sip import ParseError, SIPRequest, SIPResponse
from routescript.transaction.errors import TransactionError
from routescript.transaction.states import Effect, Event, State, Table
from routescript.transaction.timers import TimerConfig

log = logging.getLogger("routescript.transaction")


@dataclass(frozen=True, slots=True)
class Transmit:
    """Pass `message` to the transport (the server's response, the client's request)."""

    message: SIPRequest | SIPResponse


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand `response` to the TU. `final` responses are delivered exactly once per transaction;
    `local` marks a response we made ourselves (408 on Timer F, 503 on a transport error)."""

    response: SIPResponse
    final: bool
    local: bool = False


Action = Transmit | Deliver


class Machine:
    """Base of the transaction machines: the table walk and the timers."""

    TABLE: ClassVar[Table]
    INITIAL: ClassVar[State]
    # Events that come from our own code (a server's TU answering): a missing table entry for one of
    # them is a TransactionError; any other missing entry is a late network event or timer, ignored.
    TU_EVENTS: ClassVar[frozenset[Event]] = frozenset()

    def __init__(self, request: SIPRequest, *, reliable: bool, timers: TimerConfig, now: float,
                 deadlines: dict[Event, float] | None = None) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state = self.INITIAL
        self.created = now
        # `deadlines`: the timers of the initial state, armed with the machine (no _arm call each)
        self._deadlines: dict[Event, float] = {} if deadlines is None else deadlines
        self._intervals: dict[Event, float] = {}   # current value of the doubling timers (E, G)

    # --- timers ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` has something to do; None when no timer runs."""
        return min(self._deadlines.values()) if self._deadlines else None

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at `now`, earliest first."""
        out: list[Action] = []
        self._fire_due(now, out)
        return out

    def transport_error(self, now: float) -> list[Action]:
        """The transport could not send (or lost the connection)."""
        return self._event(Event.TRANSPORT_ERROR, now)

    def _event(self, event: Event, now: float, response: SIPResponse | None = None) -> list[Action]:
        """One event through the table, then every timer already due at `now`."""
        out: list[Action] = []
        self._step(event, now, response, out)
        self._fire_due(now, out)
        return out

    def _arm(self, event: Event, delay: float, now: float) -> None:
        self._deadlines[event] = now + delay

    def _cancel(self, *events: Event) -> None:
        for event in events:
            self._deadlines.pop(event, None)
            self._intervals.pop(event, None)

    def _fire_due(self, now: float, out: list[Action]) -> None:
        # Bounded: a timer that fires is removed; one re-armed by its own effect is due later than now
        # unless its interval is 0, and only timers whose delay is 0 on reliable transports (I, J, K)
        # are armed with 0 - they end the transaction, which cancels every timer. A step may give the
        # machine a new deadline list (a state entered): read it again each time.
        for _ in range(64):
            deadlines = self._deadlines
            if not deadlines:
                return
            event = min(deadlines, key=deadlines.__getitem__)  # earliest; ties in arming order
            if deadlines[event] > now:
                return
            del deadlines[event]
            self._step(event, now, None, out)
        log.error("transaction %s: timers still due after 64 steps", self.label)

    # --- the table walk -------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def label(self) -> str:
        """Call-ID and method, for log lines (STYLE 11)."""
        try:
            return f"{self.request.method} {self.request.call_id}"
        except (AttributeError, ParseError):  # a log label must never fail
            return "?"

    def _step(self, event: Event, now: float, response: SIPResponse | None, out: list[Action]) -> None:
        old_state = self.state
        effect = self._transition(event)
        if effect is None:
            return  # a late network event or timer: nothing to do
        new_state = self.state
        if new_state is State.TERMINATED:
            self._deadlines, self._intervals = {}, {}   # an ended machine has no timers
        self._do(effect, event, response, now, out)
        if new_state is not old_state and new_state is not State.TERMINATED:
            self._on_enter(new_state, now)

    def _transition(self, event: Event) -> Effect | None:
        """Move to the state the table's row for (state, `event`) names and return its effect: the one
        place a machine's state changes. No row: None for an event from the network or a timer (a late
        one is not an error), TransactionError for one from our own code (TU_EVENTS)."""
        entry = self.TABLE.get((self.state, event))
        if entry is None:
            if event in self.TU_EVENTS:
                raise TransactionError(
                    f"transaction {self.label}: cannot send a {event.value} response in state "
                    f"{self.state.value}")
            return None
        new_state, effect = entry
        old_state = self.state
        self.state = new_state
        if new_state is not old_state and log.isEnabledFor(logging.DEBUG):  # the label only when printed
            log.debug("transaction %s: %s --%s--> %s", self.label, old_state.value, event.value,
                      new_state.value)
        return effect

    def _do(self, effect: Effect, event: Event, response: SIPResponse | None, now: float,
            out: list[Action]) -> None:
        raise NotImplementedError

    def _on_enter(self, state: State, now: float) -> None:
        """Arm the timers of a newly entered state."""
