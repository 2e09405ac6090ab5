"""The dialog core, sans-IO: the dialogs of one worker, their state machine, profiles and deadlines.

No sockets, no clock, no asyncio: every call that can expire something takes `now` (time.time()
seconds); `next_deadline()` says when the adapter (the module) must call `expire(now)`.

The state machine is OpenSIPS's next_state_dlg() (dlg_hash.c) written as a table of
(state, event) -> state. A pair not in the table is a bogus event: the state does not change and the
caller logs it (OpenSIPS logs "bogus event ... in state ...").
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import MappingProxyType

from .api import DialogInfo, DlgState

MAX_DIALOGS = 100_000          # a bound on live dialogs per worker: create_dialog() fails beyond it
MAX_VALUES = 64                # $dlg_val names per dialog
MAX_VALUE_LEN = 4096           # bytes of one $dlg_val value
MAX_PROFILE_LINKS = 64         # profile memberships per dialog
HASH_SIZE = 4096               # OpenSIPS's hash_size default: h_entry = crc32(Call-ID) % HASH_SIZE


class DlgEvent(enum.Enum):
    """OpenSIPS's DLG_EVENT_*: what moves a dialog."""

    RPL1XX = "1xx"        # a provisional reply with a To tag (DLG_EVENT_RPL1xx)
    RPL2XX = "2xx"        # DLG_EVENT_RPL2xx
    RPLFAIL = "failure"   # a final 3xx-6xx to the initial INVITE (DLG_EVENT_RPL3xx)
    ACK = "ACK"           # DLG_EVENT_REQACK
    BYE = "BYE"           # DLG_EVENT_REQBYE, from either side
    TIMEOUT = "timeout"   # the lifetime ran out (dlg_ontimeout)
    END = "end"           # dialog:end_dlg / dlg_end_dlg (MI)


S = DlgState
E = DlgEvent
TRANSITIONS: dict[tuple[DlgState, DlgEvent], DlgState] = {
    (S.UNCONFIRMED, E.RPL1XX): S.EARLY,
    (S.UNCONFIRMED, E.RPL2XX): S.CONFIRMED_NA,
    (S.UNCONFIRMED, E.RPLFAIL): S.DELETED,
    (S.UNCONFIRMED, E.TIMEOUT): S.DELETED,
    (S.UNCONFIRMED, E.END): S.DELETED,
    (S.EARLY, E.RPL1XX): S.EARLY,
    (S.EARLY, E.RPL2XX): S.CONFIRMED_NA,
    (S.EARLY, E.RPLFAIL): S.DELETED,
    (S.EARLY, E.TIMEOUT): S.DELETED,
    (S.EARLY, E.END): S.DELETED,
    (S.CONFIRMED_NA, E.RPL2XX): S.CONFIRMED_NA,    # a retransmitted or second-branch 2xx
    (S.CONFIRMED_NA, E.ACK): S.CONFIRMED,
    (S.CONFIRMED_NA, E.BYE): S.DELETED,
    (S.CONFIRMED_NA, E.TIMEOUT): S.DELETED,
    (S.CONFIRMED_NA, E.END): S.DELETED,
    (S.CONFIRMED, E.RPL2XX): S.CONFIRMED,
    (S.CONFIRMED, E.ACK): S.CONFIRMED,              # the ACK of a re-INVITE
    (S.CONFIRMED, E.BYE): S.DELETED,
    (S.CONFIRMED, E.TIMEOUT): S.DELETED,
    (S.CONFIRMED, E.END): S.DELETED,
}

# create_dialog() flags: OpenSIPS 3.x names, and the 1.x/2.x letters
BYE_ON_TIMEOUT = 0x1
CREATE_FLAG_NAMES = {"bye-on-timeout": BYE_ON_TIMEOUT, "B": BYE_ON_TIMEOUT}
CREATE_FLAGS_REFUSED = {
    "options-ping-caller": "in-dialog OPTIONS pinging is not built",
    "options-ping-callee": "in-dialog OPTIONS pinging is not built",
    "reinvite-ping-caller": "in-dialog re-INVITE pinging is not built",
    "reinvite-ping-callee": "in-dialog re-INVITE pinging is not built",
    "end-on-race-condition": "RFC 5407 race detection is not built",
    "auto-prack": "PRACK generation is not built",
    "P": "in-dialog OPTIONS pinging is not built", "p": "in-dialog OPTIONS pinging is not built",
    "R": "in-dialog re-INVITE pinging is not built", "r": "in-dialog re-INVITE pinging is not built",
}


def parse_create_flags(text: str | None) -> int:
    """create_dialog()'s flags: "bye-on-timeout" (3.x, comma-separated) or letters ("B"); ValueError
    for a flag we do not build (refused at load, never ignored)."""
    if not text:
        return 0
    text = text.strip()
    parts = [p.strip() for p in text.split(",")] if ("," in text or "-" in text) else list(text)
    flags = 0
    for part in parts:
        if not part:
            continue
        if part in CREATE_FLAGS_REFUSED:
            raise ValueError(f"create_dialog flag {part!r} is not supported: {CREATE_FLAGS_REFUSED[part]}")
        if part not in CREATE_FLAG_NAMES:
            raise ValueError(f"create_dialog flag {part!r} is unknown (expected bye-on-timeout or B)")
        flags |= CREATE_FLAG_NAMES[part]
    return flags


@dataclass(slots=True, eq=False)
class Dialog:
    """One dialog as the core keeps it (mutable: changed only by DialogTable and the module)."""

    h_entry: int
    h_id: int
    call_id: str
    from_uri: str
    from_tag: str
    to_uri: str
    req_uri: str
    from_header: str                       # the caller's From line (with its tag), for our BYEs
    to_header: str                         # the INVITE's To line (no tag)
    created: float
    timeout: int                           # lifetime in seconds once confirmed ($DLG_timeout)
    create_flags: int = 0                  # BYE_ON_TIMEOUT
    to_tag: str | None = None
    caller_contact: str | None = None
    callee_contact: str | None = None
    caller_cseq: int = 0                   # the last CSeq number the caller sent
    callee_cseq: int = 0                   # the last CSeq number the callee sent (0: none yet)
    invite_cseq: int = 0                   # the initial INVITE's (its ACK carries it)
    caller_route: tuple[str, ...] = ()     # route set towards the caller (Record-Route as received)
    callee_route: tuple[str, ...] = ()     # route set towards the callee (from the 2xx)
    caller_socket: str = ""                # "udp:127.0.0.1:5060": where the caller's requests came in
    callee_socket: str = ""
    state: DlgState = DlgState.UNCONFIRMED
    start: float | None = None
    end: float | None = None
    end_reason: str | None = None
    deadline: float | None = None
    values: dict[str, str] = field(default_factory=dict)
    flags: int = 0                         # module flags (DLG_FLAG_*) and set_dlg_flag's
    profiles: list[tuple[str, str | None]] = field(default_factory=list)
    db_dirty: bool = True                  # to be written (db_mode 2)
    db_stored: bool = False                # a row exists

    @property
    def dlg_id(self) -> str:
        return f"{self.h_entry}:{self.h_id}"

    @property
    def db_id(self) -> int:
        """OpenSIPS's dlg_id column: h_entry in the high 32 bits, h_id in the low ones."""
        return (self.h_entry << 32) | self.h_id

    @property
    def did(self) -> str:
        """The Record-Route cookie (rr_param, "did"): h_entry and h_id in hex, as OpenSIPS writes it."""
        return f"{self.h_entry:x}.{self.h_id:x}"

    def info(self) -> DialogInfo:
        return DialogInfo(
            dlg_id=self.dlg_id, call_id=self.call_id, from_uri=self.from_uri, from_tag=self.from_tag,
            to_uri=self.to_uri, to_tag=self.to_tag, req_uri=self.req_uri, caller_contact=self.caller_contact,
            callee_contact=self.callee_contact, state=self.state, created=self.created, start=self.start,
            end=self.end, end_reason=self.end_reason, values=MappingProxyType(dict(self.values)),
            flags=self.flags)


class DialogLimitError(Exception):
    """Over MAX_DIALOGS: create_dialog() fails (logged by the caller)."""


@dataclass(frozen=True, slots=True)
class Change:
    """A state change the table made (the module raises callbacks, events and stats from it)."""

    dialog: Dialog
    old: DlgState
    new: DlgState


class DialogTable:
    """The live dialogs of one worker: by id, by Call-ID; profile memberships counted per (profile, value).

    `id_base` / `id_step` make h_id unique per server when workers share nothing: worker i of n numbers
    its dialogs i+1, i+1+n, ... (id_base=i, id_step=n)."""

    def __init__(self, *, id_base: int = 0, id_step: int = 1, max_dialogs: int = MAX_DIALOGS) -> None:
        self._by_id: dict[str, Dialog] = {}
        self._by_callid: dict[str, list[Dialog]] = {}
        self._next = id_base + 1
        self._step = max(1, id_step)
        self.max_dialogs = max_dialogs
        self.profile_counts: dict[tuple[str, str | None], int] = {}
        # called with (profile, value, +1/-1) on every membership change (shared.SharedProfiles.add)
        self.count_hook: Callable[[str, str | None, int], None] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._by_id.values()))

    def get(self, dlg_id: str) -> Dialog | None:
        return self._by_id.get(dlg_id)

    def by_did(self, did: str) -> Dialog | None:
        entry, _, ident = did.partition(".")
        try:
            return self._by_id.get(f"{int(entry, 16)}:{int(ident, 16)}")
        except ValueError:
            return None

    def by_callid(self, call_id: str) -> list[Dialog]:
        return list(self._by_callid.get(call_id, ()))

    def next_h_id(self) -> int:
        h_id = self._next
        self._next += self._step
        return h_id

    def create(self, *, call_id: str, from_uri: str, from_tag: str, to_uri: str, req_uri: str,
               from_header: str, to_header: str, now: float, timeout: int, h_id: int | None = None,
               h_entry: int | None = None) -> Dialog:
        if len(self._by_id) >= self.max_dialogs:
            raise DialogLimitError(f"{len(self._by_id)} dialogs live (the bound is {self.max_dialogs})")
        if h_entry is None:
            h_entry = zlib.crc32(call_id.encode()) % HASH_SIZE
        dlg = Dialog(h_entry=h_entry, h_id=self.next_h_id() if h_id is None else h_id, call_id=call_id,
                     from_uri=from_uri, from_tag=from_tag, to_uri=to_uri, req_uri=req_uri,
                     from_header=from_header, to_header=to_header, created=now, timeout=timeout)
        self.add(dlg)
        return dlg

    def add(self, dlg: Dialog) -> None:
        """A dialog made elsewhere (loaded from the database): indexed, its profiles counted."""
        if dlg.dlg_id in self._by_id:
            raise ValueError(f"dialog {dlg.dlg_id} exists")
        self._by_id[dlg.dlg_id] = dlg
        self._by_callid.setdefault(dlg.call_id, []).append(dlg)
        if dlg.h_id >= self._next:   # ids loaded back are never handed out again
            self._next = dlg.h_id + self._step - ((dlg.h_id - self._next) % self._step)
        for link in dlg.profiles:
            self._count(link)

    def remove(self, dlg: Dialog) -> None:
        if self._by_id.pop(dlg.dlg_id, None) is None:
            return
        same = self._by_callid.get(dlg.call_id)
        if same is not None:
            if dlg in same:
                same.remove(dlg)
            if not same:
                del self._by_callid[dlg.call_id]
        for link in dlg.profiles:
            self._uncount(link)
        dlg.profiles.clear()

    # --- matching (RFC 3261 12.2.2: Call-ID, local and remote tags) ---------------------------------

    def match(self, call_id: str, from_tag: str | None, to_tag: str | None) -> tuple[Dialog, str] | None:
        """The live dialog of an in-dialog request and its direction: "downstream" (from the caller:
        From tag is the caller's) or "upstream" (from the callee)."""
        for dlg in self._by_callid.get(call_id, ()):
            if dlg.state is DlgState.DELETED:
                continue
            if from_tag == dlg.from_tag and (to_tag == dlg.to_tag or dlg.to_tag is None):
                return dlg, "downstream"
            if to_tag == dlg.from_tag and dlg.to_tag is not None and from_tag == dlg.to_tag:
                return dlg, "upstream"
        return None

    # --- the state machine ---------------------------------------------------------------------------

    def event(self, dlg: Dialog, event: DlgEvent, now: float, *, reason: str | None = None) -> Change | None:
        """Apply `event`; the Change, or None when the state stays (same state or a bogus event)."""
        old = dlg.state
        new = TRANSITIONS.get((old, event))
        if new is None or new is old:
            return None
        dlg.state = new
        dlg.db_dirty = True
        if new is DlgState.CONFIRMED_NA or (new is DlgState.CONFIRMED and dlg.start is None):
            dlg.start = now
            dlg.deadline = now + dlg.timeout
        if new is DlgState.DELETED:
            dlg.end = now
            dlg.end_reason = reason
            dlg.deadline = None
        return Change(dlg, old, new)

    @staticmethod
    def is_bogus(dlg: Dialog, event: DlgEvent) -> bool:
        return (dlg.state, event) not in TRANSITIONS

    def set_timeout(self, dlg: Dialog, seconds: int, now: float) -> None:
        """$DLG_timeout = seconds: the lifetime; once confirmed, the dialog ends `seconds` from now."""
        dlg.timeout = seconds
        dlg.db_dirty = True
        if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
            dlg.deadline = now + seconds

    def next_deadline(self) -> float | None:
        deadlines = [d.deadline for d in self._by_id.values() if d.deadline is not None]
        return min(deadlines) if deadlines else None

    def due(self, now: float) -> list[Dialog]:
        """Dialogs whose deadline passed (the module ends them with TIMEOUT)."""
        return [d for d in self._by_id.values() if d.deadline is not None and d.deadline <= now]

    # --- profiles ----------------------------------------------------------------------------------

    def link(self, dlg: Dialog, profile: str, value: str | None, *, clear: bool = False) -> bool:
        """set_dlg_profile: False over MAX_PROFILE_LINKS. A dialog may be in one profile several times."""
        if clear:
            self.unlink(dlg, profile, None)
        if len(dlg.profiles) >= MAX_PROFILE_LINKS:
            return False
        key = (profile, value)
        dlg.profiles.append(key)
        self._count(key)
        dlg.db_dirty = True
        return True

    def unlink(self, dlg: Dialog, profile: str, value: str | None) -> bool:
        """unset_dlg_profile: value None removes every value of the profile (3.4)."""
        kept: list[tuple[str, str | None]] = []
        removed = False
        for key in dlg.profiles:
            if key[0] == profile and (value is None or key[1] == value):
                self._uncount(key)
                removed = True
            else:
                kept.append(key)
        dlg.profiles[:] = kept
        if removed:
            dlg.db_dirty = True
        return removed

    def _count(self, key: tuple[str, str | None]) -> None:
        self.profile_counts[key] = self.profile_counts.get(key, 0) + 1
        if self.count_hook is not None:
            self.count_hook(key[0], key[1], 1)

    def _uncount(self, key: tuple[str, str | None]) -> None:
        if self.count_hook is not None:
            self.count_hook(key[0], key[1], -1)
        n = self.profile_counts.get(key, 0) - 1
        if n > 0:
            self.profile_counts[key] = n
        else:
            self.profile_counts.pop(key, None)

    def profile_size(self, profile: str, value: str | None) -> int:
        if value is not None:
            return self.profile_counts.get((profile, value), 0)
        return sum(n for (name, _), n in self.profile_counts.items() if name == profile)

    def in_profile(self, profile: str, value: str | None) -> Iterable[Dialog]:
        for dlg in self._by_id.values():
            if any(k[0] == profile and (value is None or k[1] == value) for k in dlg.profiles):
                yield dlg
