"""When to start a worker again after it exited (docs/workers.md, section 1, "Restart policy").

Sans-IO: the supervisor tells the policy when a slot's worker started and when it exited, with `now`
(time.monotonic() there, a fake clock in the tests), and gets the delay before the next start.
Consecutive crashes back off FIRST_DELAY, doubling, up to `max_delay` (worker_restart_backoff); a
worker that stayed alive RESET_AFTER seconds starts the next series from FIRST_DELAY again.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 0.5     # seconds before the first restart after a crash
RESET_AFTER = 60.0    # seconds alive after which a crash counts as the first again


@dataclass(slots=True)
class _SlotHistory:
    started_at: float | None = None
    next_delay: float = FIRST_DELAY
    restarts: int = 0


class RestartPolicy:
    """The back-off of every slot."""

    def __init__(self, max_delay: float, *, first_delay: float = FIRST_DELAY,
                 reset_after: float = RESET_AFTER) -> None:
        if first_delay <= 0 or max_delay < first_delay:
            raise ValueError(f"restart back-off: need 0 < first delay ({first_delay}) <= max ({max_delay})")
        self.max_delay = max_delay
        self.first_delay = first_delay
        self.reset_after = reset_after
        self._slots: dict[int, _SlotHistory] = {}

    def started(self, slot: int, now: float) -> None:
        """The worker of `slot` was forked at `now`."""
        self._slots.setdefault(slot, _SlotHistory(next_delay=self.first_delay)).started_at = now

    def exited(self, slot: int, now: float) -> float:
        """The worker of `slot` exited at `now`: seconds to wait before starting it again."""
        history = self._slots.setdefault(slot, _SlotHistory(next_delay=self.first_delay))
        if history.started_at is not None and now - history.started_at >= self.reset_after:
            history.next_delay = self.first_delay
        delay = history.next_delay
        history.next_delay = min(delay * 2, self.max_delay)
        history.restarts += 1
        history.started_at = None
        return delay

    def restarts(self, slot: int) -> int:
        """How many times `slot` was restarted (MI ps shows it)."""
        history = self._slots.get(slot)
        return history.restarts if history is not None else 0
