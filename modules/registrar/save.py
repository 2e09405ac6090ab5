"""save() decided sans-IO (RFC 3261 10.3): the REGISTER's facts and the AoR's live bindings in, the
changes to store and the reply out. No clock (`now` given), no database, no sockets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from routescript.modules.usrloc.core import (
    MAX_CONTACT_URI,
    MAX_EXPIRES_ABS,
    MAX_FIELD,
    Change,
    Contact,
    new_contact_id,
)

# Our bound (OpenSIPS has none but its message size): Contacts one REGISTER may carry.
MAX_REGISTER_CONTACTS = 100

# OpenSIPS's method bits (parser/msg_parser.h METHOD_*), for the `methods` column and lookup's "m" flag.
METHOD_BITS = {"INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "OPTIONS": 32, "UPDATE": 64,
               "REGISTER": 128, "MESSAGE": 256, "SUBSCRIBE": 512, "NOTIFY": 1024, "PRACK": 2048,
               "REFER": 4096, "PUBLISH": 8192}
OTHER_METHOD = 16384

# q = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )      (RFC 3261 25.1, qvalue)
QVALUE = re.compile(r"(0(\.\d{0,3})?|1(\.0{0,3})?)\Z")


class RegisterRefused(Exception):
    """The REGISTER is answered with this error (the peer's fault, or a limit): nothing stored."""

    def __init__(self, code: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class SaveSettings:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 0
    default_q: float = -1.0
    max_contacts: int = 0
    matching_mode: int = 0          # 0 contact, 1 contact + Call-ID
    cseq_delay: int = 20
    force: bool = False             # force-registration: drop the oldest over max_contacts


@dataclass(frozen=True, slots=True)
class RegContact:
    """One Contact of the REGISTER as save() reads it."""

    uri: str
    expires: int | None              # the contact's expires param
    q: float | None
    instance: str | None = None
    reg_id: int = 0


@dataclass(frozen=True, slots=True)
class RegisterFacts:
    """What save() reads from the REGISTER."""

    aor: str
    username: str
    domain: str | None
    callid: str
    cseq: int
    star: bool
    contacts: tuple[RegContact, ...]
    expires_header: int | None
    received: str | None = None
    path: str | None = None
    socket: str | None = None
    user_agent: str = ""
    methods: int | None = None
    cflags: int = 0
    attr: str | None = None


@dataclass(slots=True)
class SaveResult:
    changes: list[Change] = field(default_factory=list)
    bindings: list[Contact] = field(default_factory=list)    # the AoR's bindings after the changes
    retransmission: bool = False


def parse_q(text: str | None) -> float | None:
    if text is None:
        return None
    value = text.strip()
    if not QVALUE.match(value):
        raise RegisterRefused(400, "Invalid q value")
    return float(value)


def methods_mask(allow: list[str] | None) -> int | None:
    if allow is None:
        return None
    mask = 0
    for method in allow:
        mask |= METHOD_BITS.get(method.strip().upper(), OTHER_METHOD)
    return mask


def _expires_of(c: RegContact, facts: RegisterFacts, s: SaveSettings) -> int:
    value = c.expires if c.expires is not None else facts.expires_header
    if value is None:
        value = s.default_expires
    if value == 0:
        return 0
    if s.min_expires and value < s.min_expires:
        raise RegisterRefused(423, "Interval Too Brief", (("Min-Expires", str(s.min_expires)),))
    if s.max_expires and value > s.max_expires:
        value = s.max_expires
    return value


def _matches(old: Contact, c: RegContact, callid: str, s: SaveSettings) -> bool:
    if c.instance is not None and old.sip_instance is not None:
        # RFC 5626 6: a flow is the instance and the reg-id
        return bool(old.sip_instance == c.instance and old.reg_id == c.reg_id)
    if old.contact != c.uri:
        return False
    return bool(s.matching_mode == 0 or old.callid == callid)


def decide(facts: RegisterFacts, current: list[Contact], s: SaveSettings, now: int,
           domain: str) -> SaveResult:
    """The changes a REGISTER makes to an AoR's live bindings `current` (RFC 3261 10.3 steps 6-8)."""
    result = SaveResult()
    bindings = {c.contact_id: c for c in current}
    if facts.star:
        # 10.3 step 6: "*" only with Expires: 0 and no other Contact
        if facts.contacts or facts.expires_header != 0:
            raise RegisterRefused(400, "Invalid Contact: * needs Expires: 0 and no other Contact")
        for old in current:
            if old.callid == facts.callid and facts.cseq <= old.cseq:
                continue   # an older or repeated request of the same registration: kept
            result.changes.append(Change("delete", domain, facts.aor, old))
            del bindings[old.contact_id]
        result.bindings = list(bindings.values())
        return result
    if len(facts.contacts) > MAX_REGISTER_CONTACTS:
        raise RegisterRefused(400, f"Too many Contacts (more than {MAX_REGISTER_CONTACTS})")
    added: list[Contact] = []
    for c in facts.contacts:
        expires = _expires_of(c, facts, s)
        old = next((b for b in bindings.values() if _matches(b, c, facts.callid, s)), None)
        if old is not None and old.callid == facts.callid:
            if facts.cseq < old.cseq:
                raise RegisterRefused(400, "Invalid CSeq number")
            if facts.cseq == old.cseq:
                if now - old.last_modified <= s.cseq_delay:
                    result.retransmission = True
                    continue
                raise RegisterRefused(400, "Invalid CSeq number")
        if expires == 0:
            if old is not None:
                result.changes.append(Change("delete", domain, facts.aor, old))
                del bindings[old.contact_id]
            continue
        q = c.q if c.q is not None else s.default_q
        kv = json.dumps({"reg-id": c.reg_id}) if c.reg_id else None
        absolute = min(now + expires, MAX_EXPIRES_ABS)
        new = Contact(contact_id=old.contact_id if old else new_contact_id(facts.aor),
                      username=facts.username, domain=facts.domain, contact=c.uri, received=facts.received,
                      path=facts.path, expires=absolute, q=q, callid=facts.callid, cseq=facts.cseq,
                      flags=0, cflags=facts.cflags, user_agent=facts.user_agent, socket=facts.socket,
                      methods=facts.methods, sip_instance=c.instance, kv_store=kv, attr=facts.attr,
                      last_modified=now, reg_id=c.reg_id)
        bindings[new.contact_id] = new
        if old is None:
            added.append(new)
        result.changes.append(Change("put", domain, facts.aor, new))
    if s.max_contacts and added and len(bindings) > s.max_contacts:
        if not s.force:
            raise RegisterRefused(503, "Too many registered contacts")
        # force-registration: the oldest bindings make room for the new ones
        over = len(bindings) - s.max_contacts
        for old in sorted((b for b in bindings.values() if b not in added), key=lambda b: b.last_modified):
            if over <= 0:
                break
            result.changes.append(Change("delete", domain, facts.aor, old))
            del bindings[old.contact_id]
            over -= 1
    result.bindings = list(bindings.values())
    return result


def check_lengths(uri: str, facts_fields: dict[str, str | None]) -> None:
    if len(uri) > MAX_CONTACT_URI:
        raise RegisterRefused(400, "Contact/received too long")
    for name, value in facts_fields.items():
        if value is not None and len(value) > MAX_FIELD:
            raise RegisterRefused(400, f"{name} too long")
