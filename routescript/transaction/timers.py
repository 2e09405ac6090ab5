"""RFC 3261 transaction timer values (section 17, table 4), configurable as OpenSIPS's tm allows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the derived timers.

    t1: RTT estimate (default 500 ms); t2: maximum retransmit interval for non-INVITE requests and
    INVITE responses (4 s); t4: maximum duration a message remains in the network (5 s).
    timer_f: non-INVITE client transaction timeout. None means 64*T1 (RFC 3261). OpenSIPS's tm
        `fr_timeout` is this timer, so the core maps fr_timeout here (OpenSIPS default 5 s).
    invite_tu_timeout: how long an INVITE server transaction may wait for the script's final reply.
    non_invite_tu_timeout: the same for non-INVITE (None: 64*T1).  RFC 3261 leaves both unbounded; we
        bound them (STYLE 7) so a script that never replies cannot leak transactions. Choice: 64*T1 is
        when the client gave up anyway (its Timer F); 3 minutes for INVITE (RFC 3261 13.3.1.1, Timer C).
    wait: how long an INVITE server transaction stays after its 2xx (Timer L, RFC 6026: 64*T1 when None);
        tm's wt_timer sets it (OpenSIPS keeps an answered transaction wt_timer seconds, 5 by default).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_f: float | None = None
    invite_tu_timeout: float = 180.0
    non_invite_tu_timeout: float | None = None
    wait: float | None = None

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError("transaction timers need 0 < T1 <= T2 and T4 > 0")
        if self.timer_f is not None and self.timer_f <= 0:
            raise ValueError("timer F (fr_timeout) must be positive")

    @property
    def fr_timeout(self) -> float:
        """Timer F: 64*T1 unless set (OpenSIPS fr_timeout)."""
        return self.timer_f if self.timer_f is not None else 64 * self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1."""
        return 64 * self.t1

    @property
    def timer_l(self) -> float:
        """RFC 6026 Accepted state: wait time for retransmitted INVITEs after a 2xx: 64*T1, or `wait`."""
        return self.wait if self.wait is not None else 64 * self.t1

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits: 64*T1 for UDP, 0 for reliable transports."""
        return 0.0 if reliable else 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: T4 for UDP, 0 for reliable transports."""
        return 0.0 if reliable else self.t4

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits: T4 for UDP, 0 for reliable transports."""
        return 0.0 if reliable else self.t4

    def tu_timeout(self, invite: bool) -> float:
        if invite:
            return self.invite_tu_timeout
        return self.non_invite_tu_timeout if self.non_invite_tu_timeout is not None else 64 * self.t1
