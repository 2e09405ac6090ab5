"""Which final response a proxy sends back when no branch succeeded (RFC 3261 16.7 step 6) - pure.

RFC 3261: a 6xx wins; else the lowest response class; within it the proxy may choose. OpenSIPS's
t_pick_branch chooses the lowest code, except that it prefers any 6xx; we do the same, and among 4xx
prefer the codes the caller can act on (401/407 a new request with credentials, 415/420/484 one
without the offending part: RFC 3261 16.7 step 6 names them), then the lowest code. A 503 is sent
as 500 (RFC 3261 16.7 step 6: "the proxy MUST convert it to 500"; OpenSIPS does not - we follow the RFC).
"""

from __future__ import annotations

from collections.abc import Sequence

ACTIONABLE_4XX = (401, 407, 415, 420, 484)


def pick_best(codes: Sequence[int]) -> int | None:
    """The index in `codes` (final codes 300-699 of the branches of one round) of the response to
    forward; None when there is none."""
    best: int | None = None
    best_rank: tuple[int, int, int, int] | None = None
    for index, code in enumerate(codes):
        if code < 300:
            continue
        rank = (0 if code >= 600 else 1, code // 100, 0 if code in ACTIONABLE_4XX else 1, code)
        if best_rank is None or rank < best_rank:
            best, best_rank = index, rank
    return best


def upstream_status(code: int) -> int:
    """The status a chosen response goes upstream with (503 -> 500, RFC 3261 16.7 step 6)."""
    return 500 if code == 503 else code
