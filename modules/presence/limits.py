"""Caps on the state presence keeps (issue 15): subscriptions in total and per watcher source address,
publications in total; what a refusal answers and how it is logged.

One client made 50,000 subscriptions with Expires 3600 and nothing stopped it. Each cap is a modparam;
over it a new subscription or publication is answered 503 with Retry-After (RFC 3261 21.5.4: the server
cannot take it now; neither RFC 6665 nor RFC 3903 names a code for "too many"), and one line is logged
per cap and address, then at most one a minute with how many were refused meanwhile. Refreshes, modifies
and removals of what is held are never refused: only new state counts against a cap.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from routescript.core.ratelimit import RateLimitedLog

# Retry-After of a refusal by a cap. Choice: room comes back only as subscriptions and publications end
# (unsubscribes, expiry at clean_period), so a client retrying at once would only be refused again; a
# minute is short next to the hour a subscription or a publication usually lasts.
CAP_RETRY_AFTER = 60

# Defaults sized for a 100,000-user deployment with room to spare: ten subscriptions and ten
# publications per user (phones watching buddies, BLF keys, message-summary, several devices). At the
# measured 0.7-1.3 KiB each (docs/benchmarks.md) a full table is about 1 GiB: bounded, not small.
DEFAULT_MAX_SUBSCRIPTIONS = 1_000_000
DEFAULT_MAX_PRESENTITIES = 1_000_000
# One address: a phone watches tens of buddies, an office behind one NAT a few thousand; far below the
# total, so that one client cannot fill the table for everyone. An edge proxy in front of the server
# sends everything from its address: list it in trusted_sources.
DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a cap refused a request: the cap (its modparam's name, or what a fixed bound counts), its
    value, and what it counted for (the source address, a presentity; None for a total). The reply is
    503 with Retry-After: CAP_RETRY_AFTER."""

    cap: str
    limit: int
    key: str | None = None

    def describe(self) -> str:
        if self.key is None:
            return f"{self.cap} ({self.limit}) reached"
        return f"{self.cap} ({self.limit}) reached for {self.key}"


class SourceCounts:
    """Live subscriptions per watcher source address (the transport source's remote host), for
    max_subscriptions_per_source. A trusted address (trusted_sources) and a subscription without a known
    source (loaded from the database: OpenSIPS's active_watchers keeps no source address) count for no
    address; they count in the total."""

    __slots__ = ("_counts", "_trusted")

    def __init__(self, trusted: Container[str] = ()) -> None:
        self._counts: dict[str, int] = {}
        self._trusted = trusted if trusted else None

    def address(self, source: Any) -> str | None:
        """The address `source` counts for, or None. (On the path of every SUBSCRIBE: kept to one call.)"""
        if source is None:
            return None
        host: str | None = getattr(source, "remote_host", None)
        if host is None or (self._trusted is not None and host in self._trusted):
            return None
        return host

    def count(self, source: Any) -> int:
        """How many subscriptions count for `source`'s address."""
        address = self.address(source)
        return self._counts.get(address, 0) if address is not None else 0

    def full(self, source: Any, limit: int) -> str | None:
        """`source`'s address when it holds `limit` subscriptions or more, else None."""
        address = self.address(source)
        if address is not None and self._counts.get(address, 0) >= limit:
            return address
        return None

    def add(self, source: Any) -> None:
        address = self.address(source)
        if address is not None:
            self._counts[address] = self._counts.get(address, 0) + 1

    def remove(self, source: Any) -> None:
        address = self.address(source)
        if address is None:
            return
        left = self._counts.get(address, 0) - 1
        if left > 0:
            self._counts[address] = left
        else:
            self._counts.pop(address, None)

    def move(self, old: Any, new: Any) -> None:
        """A live subscription now comes from `new` (a refresh from another address or port)."""
        if old is not new:
            self.remove(old)
            self.add(new)

    def clear(self) -> None:
        self._counts.clear()

    def __len__(self) -> int:
        """How many addresses hold subscriptions."""
        return len(self._counts)


class RefusalLog:
    """One warning per cap and key (address) on the first refusal, then at most one per `interval`
    seconds saying how many were held back: an attacker hammering a cap must not flood the log. At
    most `max_keys` (cap, key) pairs are remembered (the oldest forgotten first)."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, max_keys: int = 1024) -> None:
        self._log = RateLimitedLog(logger, interval=interval, max_keys=max_keys)
        self.total = 0   # every refusal, logged or not (statistic presence:refused_by_caps)

    def refused(self, refusal: Refusal, now: float, what: str) -> bool:
        """Log `what` (the request: method, Call-ID, URI) refused by `refusal` at `now`, unless a line
        for the same cap and key was written less than `interval` ago. True when written."""
        self.total += 1
        return self._log.log((refusal.cap, refusal.key), now, "%s refused 503: %s", what, refusal.describe())

    def warn(self, key: object, now: float, msg: str, *args: object) -> bool:
        """Another refusal's line (not a cap's), under the same bound: one per key and interval."""
        return self._log.log(key, now, msg, *args)
