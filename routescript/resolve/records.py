"""The DNS answers the RFC 3263 procedure reads, as plain values (no dnspython types beyond lookup.py).

A `Query` is what the procedure asks; a `RecordSet` is one answer to it, positive or negative, with the
seconds it may be kept (RFC 2181 TTL, RFC 2308 negative TTL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["FAILED", "NODATA", "NXDOMAIN", "OK", "Naptr", "Query", "RecordSet", "Srv"]


class Query(NamedTuple):
    """(name, rdtype): rdtype is "NAPTR", "SRV", "A" or "AAAA"; name lower-case, no final dot. A tuple:
    it is also the cache key."""

    name: str
    rdtype: str


@dataclass(frozen=True, slots=True)
class Naptr:
    """RFC 3403 4.1: ORDER PREFERENCE FLAGS SERVICES REGEXP REPLACEMENT."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """RFC 2782: Priority Weight Port Target ("." as the target: the service is not offered)."""

    priority: int
    weight: int
    port: int
    target: str


# RecordSet.status values: the records exist; the name exists without records of this type (RFC 2308
# NODATA); the name does not exist; the lookup failed (timeout, SERVFAIL, refused).
OK, NODATA, NXDOMAIN, FAILED = "ok", "nodata", "nxdomain", "failed"


@dataclass(frozen=True, slots=True)
class RecordSet:
    """One answer: its records (Naptr, Srv, or an address string for A/AAAA), empty unless status is OK;
    `ttl` the seconds it may be cached; `reason` says why a FAILED lookup failed."""

    status: str
    items: tuple[Naptr | Srv | str, ...] = ()
    ttl: float = 0.0
    reason: str = ""
