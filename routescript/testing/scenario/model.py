"""What a scenario file says, as typed values with their positions (reader.py reads and checks a file
into them).

    script: presence.cfg                  # the script under test, relative to this file
    modparams: {presence: {db_url: "sqlite://:memory:"}}     # replace the script's values
    uas:                                  # named user agents (optional: a name used in `from:` is one)
      alice: {uri: "sip:alice@127.0.0.1", address: "127.0.0.1:5071", transport: udp}
      bob:   {answer: {INVITE: [180, 200]}}
    templates:                            # a METHOD's template applies to every request of it;
      SUBSCRIBE: {headers: {Event: presence, Expires: 600}}     # others by `use: name`
    namespaces: {ex: "urn:example"}       # XPath prefixes beyond the built-in pidf/dm/rpid/di/wi/rl
    scenarios:
      - name: ...
        steps: [...]                      # send, expect, nothing, advance, answer, log, db, mi, routes

docs/testing-scripts.md describes every key; the reader refuses any other, at its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from routescript.script.pos import Pos

VAR_REFERENCE = re.compile(r"\$var\(([A-Za-z_][A-Za-z0-9_]*)\)")
TRANSPORTS = ("udp", "tcp", "tls", "ws")


# --- values ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Status:
    """A status expectation: 200, or a class such as 2xx."""
    low: int
    high: int
    text: str

    def matches(self, status: int) -> bool:
        return self.low <= status <= self.high


@dataclass(frozen=True, slots=True)
class HeaderCheck:
    """One header expectation: `exact` value, `regex`, `contains`, or `absent`."""
    name: str
    exact: str | None = None
    regex: re.Pattern[str] | None = None
    contains: str | None = None
    absent: bool = False
    pos: Pos | None = None


@dataclass(frozen=True, slots=True)
class BodyCheck:
    exact: str | None = None
    contains: str | None = None
    regex: re.Pattern[str] | None = None
    empty: bool | None = None
    xpath: tuple[tuple[str, Any], ...] = ()    # (expression, expected) in file order


@dataclass(frozen=True, slots=True)
class Capture:
    """`$var(name)` from a header (optionally the first group of a regex over it) or an XPath."""
    var: str
    header: str | None = None
    regex: re.Pattern[str] | None = None
    xpath: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """How a UA answers a request: status, reason, extra headers, body, after a (virtual) delay."""
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    body: str | None = None
    content_type: str | None = None
    after: float = 0.0


@dataclass(slots=True)
class UASpec:
    name: str
    uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 0                 # 0: assigned (in process) or an ephemeral port (--target)
    transport: str = "udp"
    answers: dict[str, tuple[Answer, ...]] = field(default_factory=dict)
    pos: Pos | None = None
    password: str | None = None   # answers 401/407 challenges (RFC 7616) as `username`
    username: str | None = None
    contact: str | None = None    # the Contact URI it sends (default: its address and transport)
    sent_by: str | None = None    # the Via sent-by it writes (default: its address)


@dataclass(frozen=True, slots=True)
class Template:
    ruri: str | None = None
    to: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    body: str | None = None
    content_type: str | None = None


# --- steps -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Step:
    pos: Pos
    text: str          # the step as written (first line), for reports


@dataclass(frozen=True, slots=True)
class Send(Step):
    ua: str
    method: str | None            # None with raw
    raw: str | None
    ruri: str | None
    to: str | None
    headers: tuple[tuple[str, str | None], ...]
    body: str | None
    content_type: str | None
    dialog: str | None


@dataclass(frozen=True, slots=True)
class Expect(Step):
    ua: str
    status: Status | None         # a reply
    method: str | None            # or a request
    headers: tuple[HeaderCheck, ...]
    body: BodyCheck | None
    captures: tuple[Capture, ...]
    answer: Answer | None
    dialog: str | None


@dataclass(frozen=True, slots=True)
class Nothing(Step):
    ua: str | None
    within: float


@dataclass(frozen=True, slots=True)
class Advance(Step):
    seconds: float


@dataclass(frozen=True, slots=True)
class AnswerStep(Step):
    ua: str
    answer: Answer


@dataclass(frozen=True, slots=True)
class LogCheck(Step):
    contains: str | None
    regex: re.Pattern[str] | None
    absent: bool


@dataclass(frozen=True, slots=True)
class DbCheck(Step):
    url: str | None
    table: str
    where: dict[str, Any]
    count: int | None
    rows: tuple[dict[str, Any], ...] | None


@dataclass(frozen=True, slots=True)
class MiCall(Step):
    command: str
    params: Any
    result: Any
    has_result: bool
    error: Any


@dataclass(frozen=True, slots=True)
class RoutesCheck(Step):
    ran: tuple[str, ...]
    not_ran: tuple[str, ...]


# In-process only: what --target cannot see from the wire.
IN_PROCESS_ONLY = (LogCheck, DbCheck, MiCall, RoutesCheck)


@dataclass(slots=True)
class Scenario:
    name: str
    steps: list[Step]
    pos: Pos
    file: ScenarioFile | None = None


@dataclass(slots=True)
class ScenarioFile:
    path: str
    script: str
    modparams: list[tuple[str, str, Any, Pos]]
    uas: dict[str, UASpec]
    templates: dict[str, Template]
    namespaces: dict[str, str]
    scenarios: list[Scenario]
    subscribers: dict[str, str] = field(default_factory=dict)   # user@domain -> password (auth_db)


def merge_headers(*groups: tuple[tuple[str, str | None], ...]) -> tuple[tuple[str, str | None], ...]:
    """Header lists applied in order: a later group's header replaces every earlier one of that name
    (a step's Expires: 0 wins over its template's Expires: 600); None leaves the header out."""
    out: list[tuple[str, str | None]] = []
    for group in groups:
        names = {n.lower() for n, _ in group}
        out = [(n, v) for n, v in out if n.lower() not in names] + list(group)
    return tuple(out)


def substitute_value(value: Any, variables: dict[str, str]) -> Any:
    """`$var(name)` replaced in every string of a value (db and MI expectations)."""
    if isinstance(value, str):
        return substitute(value, variables)
    if isinstance(value, dict):
        return {k: substitute_value(v, variables) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(substitute_value(v, variables) for v in value)
    return value


def substitute(text: str, variables: dict[str, str]) -> str:
    """`$var(name)` replaced by the captured value."""
    return VAR_REFERENCE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)
