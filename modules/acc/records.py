"""Accounting records and their two renderings, the syslog line and the table row (OpenSIPS acc.c:
acc_log_request, acc_log_cdrs, acc_db_request, acc_db_cdrs). Pure: values in, text or a row out.

Log lines, as OpenSIPS 3.4 prints them (the fixed part, then ";name=value" for each core field and each
log extra):
    ACC: transaction answered: timestamp=T;created=C;setuptime=S;method=INVITE;from_tag=..;to_tag=..;
        call_id=..;code=200;reason=OK
    ACC: call missed: ...                       (the same fields; the INVITE failed)
    ACC: request accounted: timestamp=T;...     (acc_log_request(); no created/setuptime without
                                                 do_accounting(), as OpenSIPS)
    ACC: call ended: created=C;call_start_time=T;duration=D;ms_duration=M;setuptime=S;method=INVITE;...
Choice where OpenSIPS prints nonsense: without the cdr flag its context has no creation time, and it
prints created=0 and setuptime=<the current unix time>; we print created=0;setuptime=0 (and leave the
row's created NULL, setuptime 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from routescript.sip import reason_phrase

REQUEST = "ACC: request accounted: "
MISSED = "ACC: call missed: "
ANSWERED = "ACC: transaction answered: "
ENDED = "ACC: call ended: "


@dataclass(frozen=True, slots=True)
class Core:
    """OpenSIPS's ACC_CORE_LEN values: what every record carries."""

    method: str
    from_tag: str
    to_tag: str
    call_id: str
    code: str          # "200"; "" when acc_*_request()'s comment has no code
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """One accounting event. `created`: when do_accounting(.., "cdr") ran on the initial request (None
    without it); `context`: do_accounting() was called (then the created/setuptime fields are written).
    For a CDR, `start`/`end` are the answer and the hangup times."""

    core: Core
    timestamp: float
    context: bool = False
    created: float | None = None
    start: float | None = None
    end: float | None = None
    extras: Mapping[str, str] = field(default_factory=dict)

    @property
    def setuptime(self) -> int:
        """Seconds from the INVITE to the answer (CDR) or to now (transaction records); 0 unknown."""
        if self.created is None:
            return 0
        begin = self.start if self.start is not None else self.timestamp
        return max(0, int(begin) - int(self.created))

    @property
    def ms_duration(self) -> int:
        if self.start is None or self.end is None:
            return 0
        return max(0, round((self.end - self.start) * 1000))

    @property
    def duration(self) -> int:
        """OpenSIPS: ceil(ms_duration / 1000) - a call of 2.3 s lasts 3 s."""
        return math.ceil(self.ms_duration / 1000)


def parse_comment(comment: str) -> tuple[str, str]:
    """acc_*_request()'s comment: "480 Nobody Home" -> ("480", "Nobody Home"); no leading code ->
    ("", comment) (acc_comm_to_acc_param). An empty reason gets the code's SIP phrase (OpenSIPS's
    error_text(): "302" -> "Moved Temporarily", never HTTP's "Found")."""
    text = comment or ""
    if len(text) >= 3 and text[:3].isdigit():
        code, reason = text[:3], text[3:].lstrip()
    else:
        code, reason = "", text
    if not reason and code and 100 <= int(code) <= 699:
        reason = reason_phrase(int(code))
    return code, reason


def _fields(core: Core) -> list[tuple[str, str]]:
    return [("method", core.method), ("from_tag", core.from_tag), ("to_tag", core.to_tag),
            ("call_id", core.call_id), ("code", core.code), ("reason", core.reason)]


def _tail(record: Record, names: Sequence[tuple[str, str]]) -> str:
    pairs = _fields(record.core) + [(name, record.extras.get(tag, "")) for tag, name in names]
    return "".join(f";{name}={value}" for name, value in pairs)


def log_line(text: str, record: Record, names: Sequence[tuple[str, str]]) -> str:
    """A transaction record's line (`text` is REQUEST, MISSED or ANSWERED); `names` the log extras,
    (tag, log name) pairs."""
    head = f"{text}timestamp={int(record.timestamp)}"
    if record.context:
        head += f";created={int(record.created or 0)};setuptime={record.setuptime}"
    return head + _tail(record, names)


def cdr_line(record: Record, names: Sequence[tuple[str, str]]) -> str:
    start = int(record.start or 0)
    head = (f"{ENDED}created={int(record.created or 0)};call_start_time={start};duration={record.duration};"
            f"ms_duration={record.ms_duration};setuptime={record.setuptime}")
    return head + _tail(record, names)


def when(ts: float) -> datetime:
    """A DATETIME value: whole seconds (OpenSIPS's time_t), naive UTC (the project's convention for
    DATETIME columns)."""
    return datetime.fromtimestamp(int(ts), UTC).replace(tzinfo=None)


def row(record: Record, names: Sequence[tuple[str, str]], *, missed: bool = False,
        cdr: bool = False) -> dict[str, Any]:
    """The row of the acc table (or missed_calls with `missed`); `names` the db extras (tag, column)."""
    core = record.core
    out: dict[str, Any] = {"method": core.method, "from_tag": core.from_tag, "to_tag": core.to_tag,
                           "callid": core.call_id, "sip_code": core.code, "sip_reason": core.reason,
                           "time": when(record.start if cdr and record.start is not None
                                        else record.timestamp)}
    for tag, column in names:
        out[column] = record.extras.get(tag)
    if record.context or cdr:
        out["setuptime"] = record.setuptime
        out["created"] = when(record.created) if record.created is not None else None
        if not missed:
            out["duration"] = record.duration if cdr else 0
            out["ms_duration"] = record.ms_duration if cdr else 0
    return out
