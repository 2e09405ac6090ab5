"""The location service, sans-IO: domains (`location`, ...) -> AoR -> contacts (OpenSIPS's udomain_t,
urecord_t, ucontact_t). No clock, no database, no sockets: every call that depends on time takes `now`
(unix seconds), and every change is returned as a `Change` so the owner (modules/usrloc/service.py)
writes it to the database and announces it to the other workers.

A contact is a frozen `Contact` with the columns of OpenSIPS's `location` table; the record of an AoR
is the tuple of its contacts, newest last. Expired contacts are invisible to lookups at once and are
dropped by `expire(now)` (the timer).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

# The largest absolute expiry we store: `location.expires` is a 32-bit INTEGER column (OpenSIPS keeps
# a time_t, but its generated PostgreSQL table is INTEGER too).
MAX_EXPIRES_ABS = 2**31 - 1
# Choice (OpenSIPS is silent): the bounds of what one binding may hold. OpenSIPS's MAX_URI_SIZE is 1024.
MAX_CONTACT_URI = 1024
MAX_FIELD = 255              # received, path, user_agent, callid, sip_instance, attr (the columns' size)
MAX_AOR = 255                # username@domain
MAX_DOMAINS = 16             # usrloc domains (tables) one server may register


@dataclass(frozen=True, slots=True)
class Contact:
    """One binding, with OpenSIPS's `location` columns. `expires` is absolute (unix seconds; 0 =
    permanent, as ul_add makes them); `last_modified` unix seconds. `reg_id` is RFC 5626's reg-id, kept
    in memory and in kv_store (OpenSIPS keeps it in memory only)."""

    contact_id: int
    username: str
    domain: str | None
    contact: str
    received: str | None = None
    path: str | None = None
    expires: int = 0
    q: float = -1.0              # -1: no q given (OpenSIPS's Q_UNSPECIFIED); sorted as 1.0 would not be
    callid: str = "Default-Call-ID"
    cseq: int = 13
    flags: int = 0
    cflags: int = 0
    user_agent: str = ""
    socket: str | None = None
    methods: int | None = None   # None: every method (no Allow in the REGISTER)
    sip_instance: str | None = None
    kv_store: str | None = None
    attr: str | None = None
    last_modified: int = 0
    reg_id: int = 0

    def alive(self, now: float) -> bool:
        return self.expires == 0 or self.expires > now

    def remaining(self, now: float) -> int:
        """Seconds left (0 for a permanent one)."""
        return 0 if self.expires == 0 else max(0, int(self.expires - now))

    def to_row(self) -> dict[str, Any]:
        """The `location` row (q -1 written as OpenSIPS writes Q_UNSPECIFIED: -1)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reg_id"}
        row["q"] = float(self.q)
        row["cflags"] = str(self.cflags) if self.cflags else None
        row["last_modified"] = datetime.fromtimestamp(self.last_modified, UTC).replace(tzinfo=None)
        row["expires"] = min(int(self.expires), MAX_EXPIRES_ABS)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Contact:
        last = row.get("last_modified")
        if isinstance(last, datetime):
            last_ts = int(last.replace(tzinfo=UTC).timestamp()) if last.year > 1900 else 0
        else:
            last_ts = int(last or 0)
        cflags_text = row.get("cflags")
        try:
            cflags = int(cflags_text) if cflags_text else 0
        except ValueError:   # OpenSIPS writes branch flag names here; we keep the bits only
            cflags = 0
        q = row.get("q")
        return cls(contact_id=int(row["contact_id"]), username=row["username"], domain=row.get("domain"),
                   contact=row["contact"], received=row.get("received"), path=row.get("path"),
                   expires=int(row["expires"]), q=round(float(q), 3) if q is not None else -1.0,
                   callid=row.get("callid") or "Default-Call-ID", cseq=int(row.get("cseq") or 0),
                   flags=int(row.get("flags") or 0), cflags=cflags, user_agent=row.get("user_agent") or "",
                   socket=row.get("socket"), methods=row.get("methods"), sip_instance=row.get("sip_instance"),
                   kv_store=row.get("kv_store"), attr=row.get("attr"), last_modified=last_ts,
                   reg_id=_reg_id_of(row.get("kv_store")))

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Contact:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _reg_id_of(kv_store: str | None) -> int:
    if not kv_store or "reg-id" not in kv_store:
        return 0
    import json
    try:
        value = json.loads(kv_store).get("reg-id", 0)
        return int(value)
    except (ValueError, AttributeError, TypeError):
        return 0


def aor_parts(aor: str, use_domain: bool) -> tuple[str, str | None]:
    """(username, domain) of an AoR key as the `location` table stores them."""
    if use_domain and "@" in aor:
        user, _, domain = aor.rpartition("@")
        return user, domain
    return aor, None


def new_contact_id(aor: str) -> int:
    """A 63-bit id: the AoR's hash in the high half (as OpenSIPS puts its aorhash there), 31 random
    bits below, so two workers never make the same id without talking to each other."""
    high = zlib.crc32(aor.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF
    low = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    return (high << 32) | low or 1


# --- changes: what the owner writes and announces -----------------------------------------------------

ChangeKind = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One binding stored (put: new or updated) or removed (delete)."""

    kind: ChangeKind
    domain: str
    aor: str
    contact: Contact


class Domain:
    """One usrloc domain (a table): AoR -> its contacts, in insertion order."""

    __slots__ = ("name", "records", "case_sensitive")

    def __init__(self, name: str, *, case_sensitive: bool = True) -> None:
        self.name = name
        self.records: dict[str, tuple[Contact, ...]] = {}
        self.case_sensitive = case_sensitive

    def key(self, aor: str) -> str:
        return aor if self.case_sensitive else aor.lower()

    def get(self, aor: str) -> tuple[Contact, ...]:
        return self.records.get(self.key(aor), ())

    def live(self, aor: str, now: float) -> list[Contact]:
        return [c for c in self.get(aor) if c.alive(now)]

    def apply(self, change: Change) -> None:
        key = self.key(change.aor)
        current = self.records.get(key, ())
        kept = tuple(c for c in current if c.contact_id != change.contact.contact_id)
        if change.kind == "put":
            kept += (change.contact,)
        if kept:
            self.records[key] = kept
        else:
            self.records.pop(key, None)

    def expired(self, now: float) -> list[Change]:
        """The deletions of every contact whose time is over (the timer applies and writes them)."""
        out = []
        for aor, contacts in self.records.items():
            for c in contacts:
                if not c.alive(now):
                    out.append(Change("delete", self.name, aor, c))
        return out

    def aors(self) -> Iterator[tuple[str, tuple[Contact, ...]]]:
        return iter(list(self.records.items()))

    def contact_count(self) -> int:
        return sum(len(v) for v in self.records.values())

    def clear(self) -> None:
        self.records.clear()


def apply_all(domain: Domain, changes: Iterable[Change]) -> None:
    for change in changes:
        domain.apply(change)


def best_first(contacts: Iterable[Contact]) -> list[Contact]:
    """Highest q first (no q counts as the default 1.0? no: OpenSIPS sorts an unspecified q as -1 but
    treats it as the top priority only when alone; we sort it as 1.0 as RFC 3261 16.6 readers expect),
    then the most recently modified (newest registration first)."""
    def q_of(c: Contact) -> float:
        return 1.0 if c.q < 0 else c.q
    return sorted(contacts, key=lambda c: (-q_of(c), -c.last_modified, -c.contact_id))


def evolve(contact: Contact, **changes: Any) -> Contact:
    return replace(contact, **changes)
