"""Running a scenario: its steps against a world, in process (Simulation: the real server on a
simulated network and a virtual clock) or live (LiveWorld: a running server over UDP, real time).

A step that fails raises StepFailed with what was expected, what came instead and the script lines
that ran since the last `send`; the runner stops the scenario there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lxml import etree

from routescript.script.pos import Pos
from routescript.sip import SIPRequest, SIPResponse

from . import model as m
from .reader import NAMESPACES
from .ua import Received, UserAgent

log = logging.getLogger("routescript.testing.scenario")

# --target: how long an expectation waits for its message, in real seconds, and the longest
# `advance`/`nothing within` slept for real (longer ones make the scenario skipped live).
LIVE_WAIT = 2.0
LIVE_MAX_ADVANCE = 10.0


_S = TypeVar("_S", bound=m.Step)


class StepFailed(AssertionError):
    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.actual = actual
        self.lines: list[str] = []
        self.lost: list[str] = []    # what the server sent where no UA listens (first lines)


class NotRunnable(Exception):
    """A scenario this world cannot run (--target and a step only the in-process run can check)."""


@dataclass(slots=True)
class StepContext:
    """What the steps of one scenario share."""
    variables: dict[str, str] = field(default_factory=dict)
    log_seen: int = 0        # log records already consumed by `log` steps
    namespaces: dict[str, str] = field(default_factory=lambda: dict(NAMESPACES))   # XPath prefixes


class World:
    """What steps run against: the UAs, settling, time; in-process worlds add db/mi/log/routes."""

    uas: dict[str, UserAgent]
    live = False

    async def settle(self) -> None: ...

    async def advance(self, seconds: float) -> None: ...

    async def wait_for(self, found: Callable[[], bool]) -> None:
        """Until `found()` or (in process) until the server has nothing left to do."""
        await self.settle()

    def ran_since_send(self) -> list[Pos]:
        return []

    def mark_send(self) -> None:
        return None

    def server_uri(self) -> str:
        return ""

    def lost(self) -> list[str]:
        return []

    def describe_lines(self, positions: list[Pos]) -> list[str]:
        return []

    # in process only
    async def db_rows(self, url: str | None, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotRunnable("db")

    async def mi(self, command: str, params: Any) -> Any:
        raise NotRunnable("mi")

    def log_records(self) -> list[logging.LogRecord]:
        raise NotRunnable("log")

    def route_labels(self, positions: list[Pos]) -> set[str]:
        raise NotRunnable("routes")


async def run_steps(world: World, scenario: m.Scenario, ctx: StepContext | None = None,
                    on_step: Callable[[m.Step], None] | None = None) -> None:
    """Every step in order; StepFailed (with the script lines that ran) at the first that fails."""
    ctx = ctx or StepContext()
    for ua in world.uas.values():
        ua.variables = ctx.variables
    for step in scenario.steps:
        if on_step is not None:
            on_step(step)
        try:
            await run_step(world, step, ctx)
        except StepFailed as exc:
            exc.lines = world.describe_lines(world.ran_since_send())
            exc.lost = world.lost()
            raise


async def run_step(world: World, step: m.Step, ctx: StepContext) -> None:
    if isinstance(step, m.Send):
        ua = world.uas[step.ua]
        await world.settle()
        world.mark_send()
        try:
            ua.send_step(step, world.server_uri())
        except (RuntimeError, OSError) as exc:   # OSError: no socket of the UA's transport
            raise StepFailed(str(exc)) from None
        await world.settle()
    elif isinstance(step, m.Expect):
        await _expect(world, step, ctx)
    elif isinstance(step, m.Nothing):
        await _nothing(world, step)
    elif isinstance(step, m.Advance):
        await world.advance(step.seconds)
    elif isinstance(step, m.AnswerStep):
        await world.settle()
        ua = world.uas[step.ua]
        if not ua.unanswered:
            raise StepFailed(f"{ua.name} has no unanswered request to answer",
                             expected=step.text, actual=_queues(ua))
        ua.answer(ua.unanswered[0], step.answer)
        await world.settle()
    elif isinstance(step, m.LogCheck):
        await world.settle()
        _log(world, step, ctx)
    elif isinstance(step, m.DbCheck):
        await world.settle()
        await _db(world, _with_vars(step, ctx, "where", "rows"))
    elif isinstance(step, m.MiCall):
        await world.settle()
        await _mi(world, _with_vars(step, ctx, "params", "result", "error"))
    elif isinstance(step, m.RoutesCheck):
        await world.settle()
        labels = world.route_labels(world.ran_since_send())
        missing = [r for r in step.ran if r not in labels]
        unwanted = [r for r in step.not_ran if r in labels]
        if missing or unwanted:
            raise StepFailed("routes: " + "; ".join(
                ([f"did not run {', '.join(missing)}"] if missing else []) +
                ([f"ran {', '.join(unwanted)}"] if unwanted else [])),
                expected=step.text, actual="ran: " + (", ".join(sorted(labels)) or "no route"))


def _with_vars(step: _S, ctx: StepContext, *names: str) -> _S:
    values = {n: m.substitute_value(getattr(step, n), ctx.variables) for n in names}
    return dataclasses.replace(step, **values)


# --- expect ----------------------------------------------------------------------------------------

async def _expect(world: World, step: m.Expect, ctx: StepContext) -> None:
    ua = world.uas[step.ua]
    call_id = ua.dialogs[step.dialog].call_id if step.dialog and step.dialog in ua.dialogs else None

    def candidate() -> Received | None:
        if step.status is not None:
            return _reply_candidate(ua, step.status, call_id)
        return next((r for r in ua.requests if isinstance(r.message, SIPRequest)
                     and r.message.method == step.method
                     and (call_id is None or r.message.call_id == call_id)), None)

    await world.wait_for(lambda: candidate() is not None)
    found = candidate()
    what = f"reply {step.status.text}" if step.status is not None else f"request {step.method}"
    if found is None:
        raise StepFailed(f"expected a {what} to {ua.name}; nothing of the kind arrived",
                         expected=step.text, actual=_queues(ua))
    queue = ua.replies if step.status is not None else ua.requests
    if step.status is not None:
        # the provisional replies passed over are taken with it
        for r in list(queue):
            if r is found:
                break
            if isinstance(r.message, SIPResponse) and r.message.status < 200 and (
                    call_id is None or r.message.call_id == call_id):
                queue.remove(r)
    queue.remove(found)
    msg = found.message
    problems: list[str] = []
    if step.status is not None and isinstance(msg, SIPResponse) and not step.status.matches(msg.status):
        problems.append(f"status {msg.status} {msg.reason}, expected {step.status.text}")
    problems += _check_headers(msg, step.headers)
    if step.body is not None:
        problems += _check_body(msg.body, step.body, ctx.namespaces)
    if problems:
        raise StepFailed(f"{what} to {ua.name}: " + "; ".join(problems), expected=step.text,
                         actual=_show(msg))
    for capture in step.captures:
        value = _capture(msg, capture, ctx.namespaces)
        if value is None:
            raise StepFailed(f"capture $var({capture.var}): nothing to capture in the {what}",
                             expected=step.text, actual=_show(msg))
        ctx.variables[capture.var] = value
    if isinstance(msg, SIPRequest):
        if step.dialog is not None:
            ua.adopt_dialog(step.dialog, msg)
        if step.answer is not None:
            if found.answered:
                raise StepFailed(f"the {msg.method} was already answered by {ua.name}'s answer rules; "
                                 f"`answer: {{{msg.method}: null}}` in uas: leaves it to the steps",
                                 expected=step.text, actual=_show(msg))
            ua.answer(msg, step.answer)
            await world.settle()


def _reply_candidate(ua: UserAgent, status: m.Status, call_id: str | None) -> Received | None:
    """The reply an expectation is about: the first that has the status, passing over provisional
    replies of another status (a 100 Trying before the 180); a final reply stops the search (a 486
    where a 200 was expected is reported as such)."""
    for r in ua.replies:
        resp = r.message
        if not isinstance(resp, SIPResponse) or (call_id is not None and resp.call_id != call_id):
            continue
        if status.matches(resp.status) or resp.status >= 200:
            return r
    return None


def _header_value(msg: SIPRequest | SIPResponse, name: str) -> str | None:
    values = msg.header_all(name)
    return ", ".join(values) if values else None


def _check_headers(msg: SIPRequest | SIPResponse, checks: tuple[m.HeaderCheck, ...]) -> list[str]:
    out: list[str] = []
    for c in checks:
        values = msg.header_all(c.name)
        joined = ", ".join(values) if values else None
        if c.absent:
            if values:
                out.append(f"{c.name} should be absent, is {joined!r}")
        elif joined is None:
            out.append(f"no {c.name} header")
        elif c.exact is not None and c.exact != joined and c.exact not in values:
            out.append(f"{c.name} is {joined!r}, expected {c.exact!r}")
        elif c.regex is not None and not c.regex.search(joined):
            out.append(f"{c.name} {joined!r} does not match /{c.regex.pattern}/")
        elif c.contains is not None and c.contains not in joined:
            out.append(f"{c.name} {joined!r} does not contain {c.contains!r}")
    return out


def _check_body(body: bytes, check: m.BodyCheck, namespaces: dict[str, str]) -> list[str]:
    text = body.decode("utf-8", "replace")
    out: list[str] = []
    if check.exact is not None and text.strip() != check.exact.strip():
        out.append("the body differs")
    if check.empty is not None and (not text.strip()) != check.empty:
        out.append("the body is empty" if not text.strip() else "the body is not empty")
    if check.contains is not None and check.contains not in text:
        out.append(f"the body does not contain {check.contains!r}")
    if check.regex is not None and not check.regex.search(text):
        out.append(f"the body does not match /{check.regex.pattern}/")
    if check.xpath:
        try:
            root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            return [*out, f"the body is not XML ({exc})"]
        for expr, expected in check.xpath:
            got = _xpath_values(root, expr, namespaces)
            if not _xpath_matches(got, expected):
                out.append(f"XPath {expr} gives {_xpath_text(got)}, expected {expected!r}")
    return out


def _xpath_values(root: Any, expr: str, namespaces: dict[str, str]) -> Any:
    result = root.xpath(expr, namespaces=namespaces)
    if isinstance(result, list):
        return [(r.text or "").strip() if isinstance(r, etree._Element) else str(r) for r in result]
    return result


def _xpath_matches(got: Any, expected: Any) -> bool:
    if expected is None:
        return got in ([], "", None)
    if isinstance(got, list):
        if isinstance(expected, list):
            return got == [str(e) for e in expected]
        return bool(got) and got[0] == _as_text(expected)
    if isinstance(got, bool):
        return got == bool(expected)
    if isinstance(got, float):
        try:
            return got == float(expected)
        except (TypeError, ValueError):
            return False
    return str(got) == _as_text(expected)


def _as_text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _xpath_text(got: Any) -> str:
    if isinstance(got, float) and got.is_integer():
        return str(int(got))
    return repr(got) if not isinstance(got, list) else ("nothing" if not got else repr(got))


def _capture(msg: SIPRequest | SIPResponse, c: m.Capture, namespaces: dict[str, str]) -> str | None:
    if c.header is not None:
        value = _header_value(msg, c.header)
        if value is None:
            return None
        if c.regex is not None:
            found = c.regex.search(value)
            if found is None:
                return None
            return found.group(1) if found.re.groups else found.group(0)
        return value
    try:
        root = etree.fromstring(msg.body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    got = _xpath_values(root, c.xpath or "", namespaces)
    if isinstance(got, list):
        return got[0] if got else None
    return _xpath_text(got) if isinstance(got, float) else str(got)


# --- the other steps -------------------------------------------------------------------------------

async def _nothing(world: World, step: m.Nothing) -> None:
    await world.settle()
    if step.within:
        await world.advance(step.within)
    uas = [world.uas[step.ua]] if step.ua else list(world.uas.values())
    for ua in uas:
        waiting = [r for r in (*ua.requests, *ua.replies)
                   if not (isinstance(r.message, SIPResponse) and r.message.status == 100)]
        if waiting:
            raise StepFailed(f"expected nothing for {ua.name}" + (f" within {step.within:g} s" if step.within
                                                                   else "") + f"; {len(waiting)} arrived",
                             expected=step.text, actual=_show(waiting[0].message))


def _log(world: World, step: m.LogCheck, ctx: StepContext) -> None:
    records = world.log_records()
    fresh = records[ctx.log_seen:]

    def hit(rec: logging.LogRecord) -> bool:
        text = rec.getMessage()
        return (step.contains in text) if step.contains is not None else bool(
            step.regex and step.regex.search(text))

    index = next((i for i, rec in enumerate(fresh) if hit(rec)), None)
    pattern = step.contains if step.contains is not None else f"/{step.regex.pattern if step.regex else ''}/"
    shown = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in fresh[-15:]) or "(no log line)"
    if step.absent:
        if index is not None:
            raise StepFailed(f"a log line matches {pattern!r}", expected=step.text,
                             actual=fresh[index].getMessage())
        return
    if index is None:
        raise StepFailed(f"no log line matches {pattern!r} since the last log step", expected=step.text,
                         actual=shown)
    ctx.log_seen += index + 1


async def _db(world: World, step: m.DbCheck) -> None:
    try:
        rows = await world.db_rows(step.url, step.table, step.where)
    except NotRunnable:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad table or column is the scenario's failure
        raise StepFailed(f"db: {type(exc).__name__}: {exc}", expected=step.text) from None
    shown = "\n".join(repr(_plain_row(r)) for r in rows[:10]) or "(no rows)"
    if step.count is not None and len(rows) != step.count:
        raise StepFailed(f"db {step.table}: {len(rows)} rows, expected {step.count}", expected=step.text,
                         actual=shown)
    if step.rows is not None:
        unmatched = list(rows)
        for want in step.rows:
            hit = next((r for r in unmatched if all(_same(r.get(k), v) for k, v in want.items())), None)
            if hit is None:
                raise StepFailed(f"db {step.table}: no row has {want}", expected=step.text, actual=shown)
            unmatched.remove(hit)


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.decode("utf-8", "replace")[:80] if isinstance(v, bytes) else v) for k, v in row.items()}


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, bytes):
        got = got.decode("utf-8", "replace")
    if want is None:
        return got is None
    return str(got) == _as_text(want)


async def _mi(world: World, step: m.MiCall) -> None:
    from routescript.mi.jsonrpc import JSONRPCError

    try:
        result = await world.mi(step.command, step.params)
    except JSONRPCError as exc:
        if step.error is None:
            raise StepFailed(f"MI {step.command}: error {exc.code} {exc}", expected=step.text) from None
        if not _subset(step.error, {"code": exc.code, "message": exc.message}) and \
                not _subset(step.error, exc.code) and not _subset(step.error, exc.message):
            raise StepFailed(f"MI {step.command}: error {exc.code} {exc.message}",
                             expected=step.text) from None
        return
    if step.error is not None:
        raise StepFailed(f"MI {step.command}: succeeded, expected error {step.error!r}", expected=step.text,
                         actual=repr(result))
    if step.has_result and not _subset(step.result, result):
        raise StepFailed(f"MI {step.command}: the result differs", expected=_pretty(step.result),
                         actual=_pretty(result))


def _subset(want: Any, got: Any) -> bool:
    """`want` found in `got`: every key of a mapping (recursively), a list item by item (same length),
    a value equal as text; a string in a list matches when some item equals it."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(
            _subset(w, g) for w, g in zip(want, got, strict=True))
    if want is None:
        return got is None
    return _as_text(want) == _as_text(got)


def _pretty(value: Any) -> str:
    import json

    text = json.dumps(value, indent=1, default=str)
    return text if len(text) < 3000 else text[:3000] + "\n..."


def _show(msg: SIPRequest | SIPResponse) -> str:
    text = msg.to_bytes().decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    return text if len(text) < 4000 else text[:4000] + "\n..."


def _queues(ua: UserAgent) -> str:
    waiting = [*ua.requests, *ua.replies]
    if not waiting:
        return f"{ua.name} has received nothing that is not expected yet"
    return f"{ua.name} has, not yet expected:\n" + "\n".join(
        "  " + _show(r.message).splitlines()[0] for r in waiting)


__all__ = ["LIVE_MAX_ADVANCE", "LIVE_WAIT", "NotRunnable", "StepContext", "StepFailed", "World", "run_step",
           "run_steps"]
