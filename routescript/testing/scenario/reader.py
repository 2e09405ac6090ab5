"""The reader of scenario files: YAML nodes checked into the typed steps of model.py, every mistake a
ScenarioError at its file:line:col (docs/testing-scripts.md describes every key; any other is refused)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from routescript.script.pos import Pos

from .model import (
    TRANSPORTS,
    VAR_REFERENCE,
    Advance,
    Answer,
    AnswerStep,
    BodyCheck,
    Capture,
    DbCheck,
    Expect,
    HeaderCheck,
    LogCheck,
    MiCall,
    Nothing,
    RoutesCheck,
    Scenario,
    ScenarioFile,
    Send,
    Status,
    Step,
    Template,
    UASpec,
    merge_headers,
)
from .yamlread import Node, ScenarioError, parse_document

# XPath prefixes every body expectation knows (RFC 3863 PIDF, RFC 4479 data model, RFC 4480 RPID,
# RFC 4235 dialog-info, RFC 3858 watcherinfo, RFC 4662 RLMI).
NAMESPACES = {
    "pidf": "urn:ietf:params:xml:ns:pidf",
    "dm": "urn:ietf:params:xml:ns:pidf:data-model",
    "rpid": "urn:ietf:params:xml:ns:pidf:rpid",
    "di": "urn:ietf:params:xml:ns:dialog-info",
    "wi": "urn:ietf:params:xml:ns:watcherinfo",
    "rl": "urn:ietf:params:xml:ns:rlmi",
    "mwi": "urn:ietf:params:xml:ns:simple-message-summary",
}
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")
_STATUS = re.compile(r"([1-6])(xx|\d\d)")
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})")
# A Via sent-by (RFC 3261 20.42: host [":" port]), as a browser's "df7jal23ls0d.invalid".
_SENT_BY = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?")

TOP_KEYS = ("script", "modparams", "uas", "templates", "namespaces", "subscribers", "scenarios")
STEP_KINDS = ("send", "expect", "nothing", "advance", "answer", "log", "db", "mi", "routes")


def load_file(path: str) -> ScenarioFile:
    """Read and check a scenario file; ScenarioError (file:line:col) for anything wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}", None) from None
    return read_file(parse_document(text, path), path)


def read_file(root: Node, path: str) -> ScenarioFile:
    top = root.mapping(TOP_KEYS, "the scenario file")
    if "script" not in top:
        raise root.error("a scenario file needs `script:` (the route script under test)")
    if "scenarios" not in top:
        raise root.error("a scenario file needs `scenarios:` (a list of {name, steps})")
    script_node = top["script"]
    script = str((Path(path).parent / script_node.text("script")).resolve()) if path != "<python>" \
        else script_node.text("script")
    if path != "<python>" and not Path(script).is_file():
        raise script_node.error(f"no such script: {script}")
    namespaces = dict(NAMESPACES)
    if "namespaces" in top:
        for prefix, uri in top["namespaces"].mapping(None, "namespaces").items():
            namespaces[prefix] = uri.text(f"namespace {prefix}")
    reader = _Reader(namespaces)
    f = ScenarioFile(path=path, script=script, modparams=reader.modparams(top.get("modparams")),
                     uas=reader.uas(top.get("uas")), templates=reader.templates(top.get("templates")),
                     namespaces=namespaces, scenarios=[])
    reader.file = f
    if "subscribers" in top:
        for account, password in top["subscribers"].mapping(None, "subscribers").items():
            if not re.fullmatch(r"[^@\s:]+@[^@\s:]+", account):
                raise top["subscribers"].keys()[account].error(f"{account!r}: expected user@domain")
            f.subscribers[account] = _text(password, "a password")
    names: set[str] = set()
    for node in top["scenarios"].seq("scenarios"):
        scenario = reader.scenario(node)
        if scenario.name in names:
            raise node.error(f"two scenarios are named {scenario.name!r}")
        names.add(scenario.name)
        scenario.file = f
        f.scenarios.append(scenario)
    if not f.scenarios:
        raise top["scenarios"].error("no scenarios in this file")
    return f


class _Reader:
    def __init__(self, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.file: ScenarioFile | None = None

    # --- file level -----------------------------------------------------------------------------

    def modparams(self, node: Node | None) -> list[tuple[str, str, Any, Pos]]:
        out: list[tuple[str, str, Any, Pos]] = []
        if node is None:
            return out
        for module, params in node.mapping(None, "modparams").items():
            for name, value in params.mapping(None, f"modparams of {module}").items():
                v = value.scalar(f"modparam {module}.{name}")
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    raise value.error(f"modparam {module}.{name} should be a string or a whole number")
                out.append((module, name, v, value.pos))
        return out

    def uas(self, node: Node | None) -> dict[str, UASpec]:
        out: dict[str, UASpec] = {}
        if node is None:
            return out
        for name, spec in node.mapping(None, "uas").items():
            fields = spec.mapping(("uri", "address", "transport", "answer", "password", "username", "contact",
                                   "sent_by"), f"UA {name}")
            ua = UASpec(name, pos=spec.pos)
            if "password" in fields:
                ua.password = _text(fields["password"], "password")
            if "username" in fields:
                ua.username = fields["username"].text("username")
            if "uri" in fields:
                ua.uri = self.uri(fields["uri"], "uri")
            if "contact" in fields:
                ua.contact = self.uri(fields["contact"], "contact")
            if "sent_by" in fields:
                ua.sent_by = fields["sent_by"].text("sent_by")
                if not _SENT_BY.fullmatch(ua.sent_by):
                    raise fields["sent_by"].error("sent_by should be host or host:port (a Via sent-by, "
                                                  "such as df7jal23ls0d.invalid)")
            if "address" in fields:
                m = _ADDRESS.fullmatch(fields["address"].text("address"))
                if m is None or not 0 < int(m.group(2)) < 65536:
                    raise fields["address"].error("address should be host:port (127.0.0.1:5071)")
                ua.host, ua.port = m.group(1).strip("[]"), int(m.group(2))
            if "transport" in fields:
                ua.transport = fields["transport"].text("transport").lower()
                if ua.transport not in TRANSPORTS:
                    raise fields["transport"].error(f"transport should be one of {', '.join(TRANSPORTS)}")
            if "answer" in fields:
                for method, how in fields["answer"].mapping(None, "answer").items():
                    if not _METHOD.fullmatch(method):
                        raise fields["answer"].keys()[method].error(f"{method!r} is not a SIP method")
                    ua.answers[method] = tuple(self.answer(a) for a in how.seq_or_one()) \
                        if not how.is_null else ()
            out[name] = ua
        return out

    def templates(self, node: Node | None) -> dict[str, Template]:
        out: dict[str, Template] = {}
        if node is None:
            return out
        for name, spec in node.mapping(None, "templates").items():
            fields = spec.mapping(("ruri", "to", "headers", "body", "content_type"), f"template {name}")
            out[name] = Template(
                ruri=self.uri(fields["ruri"], "ruri") if "ruri" in fields else None,
                to=self.uri(fields["to"], "to") if "to" in fields else None,
                headers=self.header_values(fields.get("headers")),
                body=fields["body"].text("body") if "body" in fields else None,
                content_type=fields["content_type"].text("content_type") if "content_type" in fields
                else None)
        return out

    def scenario(self, node: Node) -> Scenario:
        fields = node.mapping(("name", "steps"), "a scenario")
        if "name" not in fields or "steps" not in fields:
            raise node.error("a scenario needs `name:` and `steps:`")
        scenario = Scenario(fields["name"].text("name"), [], node.pos)
        state = _ScenarioState()
        for step_node in fields["steps"].seq("steps"):
            step = self.step(step_node, state)
            scenario.steps.append(step)
        if not scenario.steps:
            raise fields["steps"].error("a scenario needs at least one step")
        return scenario

    # --- steps ----------------------------------------------------------------------------------

    def step(self, node: Node, state: _ScenarioState) -> Step:
        entries = node.mapping(STEP_KINDS, "a step")
        if len(entries) != 1:
            raise node.error(f"a step is one of {', '.join(STEP_KINDS)} (found {len(entries)} keys)")
        kind, body = next(iter(entries.items()))
        self.check_vars(body, state)
        text = node.lines[node.pos.line - 1].strip() if 0 < node.pos.line <= len(node.lines) else kind
        pos = node.pos
        step: Step
        if kind == "send":
            step = self.send(body, pos, text, state)
        elif kind == "expect":
            step = self.expect(body, pos, text, state)
        elif kind == "nothing":
            f = body.mapping(("to", "within"), "nothing") if not body.is_null else {}
            ua = self.known_ua(f["to"], state) if "to" in f else None
            step = Nothing(pos, text, ua, f["within"].duration("within") if "within" in f else 0.0)
        elif kind == "advance":
            step = Advance(pos, text, body.duration("advance"))
        elif kind == "answer":
            f = body.mapping(("ua", "status", "reason", "headers", "body", "content_type", "after"), "answer")
            if "ua" not in f:
                raise body.error("answer needs `ua:` (who answers its oldest unanswered request)")
            step = AnswerStep(pos, text, self.known_ua(f["ua"], state), self.answer(body, skip=("ua",)))
        elif kind == "log":
            f = body.mapping(("contains", "regex", "absent"), "log")
            if ("contains" in f) == ("regex" in f):
                raise body.error("log needs one of `contains:` or `regex:`")
            step = LogCheck(pos, text, f["contains"].text("contains") if "contains" in f else None,
                            self.regex(f["regex"]) if "regex" in f else None,
                            f["absent"].boolean("absent") if "absent" in f else False)
        elif kind == "db":
            step = self.db(body, pos, text)
        elif kind == "mi":
            f = body.mapping(("command", "params", "result", "error"), "mi")
            if "command" not in f:
                raise body.error("mi needs `command:`")
            if "result" in f and "error" in f:
                raise f["error"].error("an MI call has a result or an error, not both")
            step = MiCall(pos, text, f["command"].text("command"),
                          f["params"].plain() if "params" in f else None,
                          f["result"].plain() if "result" in f else None, "result" in f,
                          f["error"].plain() if "error" in f else None)
        else:
            f = body.mapping(("ran", "not_ran"), "routes")
            if not f:
                raise body.error("routes needs `ran:` and/or `not_ran:` (route names such as "
                                 "route[presence])")
            ran = tuple(n.text("a route") for n in f["ran"].seq_or_one()) if "ran" in f else ()
            not_ran = tuple(n.text("a route") for n in f["not_ran"].seq_or_one()) if "not_ran" in f else ()
            step = RoutesCheck(pos, text, ran, not_ran)
        return step

    def send(self, body: Node, pos: Pos, text: str, state: _ScenarioState) -> Send:
        f = body.mapping(("from", "request", "raw", "ruri", "to", "headers", "body", "content_type", "dialog",
                          "use"), "send")
        if "from" not in f:
            raise body.error("send needs `from:` (the UA that sends)")
        ua = f["from"].text("from")
        if self.file is not None and self.file.uas and ua not in self.file.uas:
            raise f["from"].error(f"no UA named {ua!r} in `uas:` ({', '.join(self.file.uas)})")
        if ("request" in f) == ("raw" in f):
            raise body.error("send needs one of `request:` (a method) or `raw:` (the message text)")
        method = None
        if "request" in f:
            method = f["request"].text("request")
            if not _METHOD.fullmatch(method):
                raise f["request"].error(f"{method!r} is not a SIP method (upper case, e.g. SUBSCRIBE)")
        else:
            extra = set(f) - {"from", "raw"}
            if extra:
                raise body.keys()[sorted(extra)[0]].error("raw messages are sent as written: only `from:` "
                                                          "goes with `raw:`")
        template = Template()
        if "use" in f:
            name = f["use"].text("use")
            if self.file is None or name not in self.file.templates:
                raise f["use"].error(f"no template named {name!r}")
            template = self.file.templates[name]
        auto = self.file.templates.get(method or "") if self.file is not None else None
        ruri = self.uri(f["ruri"], "ruri") if "ruri" in f else template.ruri or (auto.ruri if auto else None)
        dialog = f["dialog"].text("dialog") if "dialog" in f else None
        in_dialog = dialog is not None and dialog in state.dialogs
        if method is not None and ruri is None and not in_dialog and method != "ACK":
            raise body.error(f"a {method} outside a dialog needs `ruri:` (or a template that gives one)")
        if method == "ACK" and not in_dialog:
            raise body.error("an ACK is sent inside a dialog: `dialog:` naming an INVITE's dialog "
                             "(the ACK for an error reply is sent by the UA itself)")
        headers = merge_headers(auto.headers if auto else (), template.headers,
                                self.header_values(f.get("headers")))
        state.senders.add(ua)
        state.last_sender = ua
        if dialog is not None:
            state.dialogs.add(dialog)
        return Send(pos, text, ua, method, f["raw"].text("raw") if "raw" in f else None, ruri,
                    self.uri(f["to"], "to") if "to" in f else template.to or (auto.to if auto else None),
                    headers, f["body"].text("body") if "body" in f else template.body or (auto.body if auto
                                                                                             else None),
                    f["content_type"].text("content_type") if "content_type" in f
                    else template.content_type or (auto.content_type if auto else None), dialog)

    def expect(self, body: Node, pos: Pos, text: str, state: _ScenarioState) -> Expect:
        f = body.mapping(("to", "reply", "request", "headers", "body", "capture", "answer", "dialog"),
                         "expect")
        if ("reply" in f) == ("request" in f):
            raise body.error("expect needs one of `reply:` (a status, 200 or 2xx) or `request:` (a method)")
        if "to" in f:
            ua = self.known_ua(f["to"], state)
        elif state.last_sender is not None:
            ua = state.last_sender
        else:
            raise body.error("expect needs `to:` (no UA has sent anything before this step)")
        status = method = None
        if "reply" in f:
            status = self.status(f["reply"])
            if ua not in state.senders:
                raise f["reply"].error(f"impossible: {ua} has sent no request before this step")
            if "answer" in f:
                raise f["answer"].error("only a request is answered")
        else:
            method = f["request"].text("request")
            if not _METHOD.fullmatch(method):
                raise f["request"].error(f"{method!r} is not a SIP method")
        captures = self.captures(f.get("capture"))
        for c in captures:
            state.captured.add(c.var)
        dialog = f["dialog"].text("dialog") if "dialog" in f else None
        if dialog is not None:
            state.dialogs.add(dialog)
        return Expect(pos, text, ua, status, method, self.header_checks(f.get("headers")),
                      self.body_check(f["body"]) if "body" in f else None, captures,
                      self.answer(f["answer"]) if "answer" in f else None, dialog)

    def db(self, body: Node, pos: Pos, text: str) -> DbCheck:
        f = body.mapping(("url", "table", "where", "count", "rows"), "db")
        if "table" not in f:
            raise body.error("db needs `table:` (and `where:`, then `count:` or `rows:`)")
        if "count" not in f and "rows" not in f:
            raise body.error("db needs `count:` or `rows:` (what to expect)")
        where = {k: v.scalar(k) for k, v in f["where"].mapping(None, "where").items()} if "where" in f else {}
        rows = None
        if "rows" in f:
            rows = tuple({k: v.scalar(k) for k, v in r.mapping(None, "a row").items()}
                         for r in f["rows"].seq())
        count = f["count"].integer("count", 0) if "count" in f else None
        if rows is not None and count is not None and count != len(rows):
            raise f["count"].error(f"impossible: count {count} but {len(rows)} rows are listed")
        url = f["url"].text("url") if "url" in f else None
        return DbCheck(pos, text, url, f["table"].text("table"), where, count, rows)

    # --- parts ----------------------------------------------------------------------------------

    def known_ua(self, node: Node, state: _ScenarioState) -> str:
        name = node.text("a UA name")
        declared = self.file is not None and name in self.file.uas
        if not declared and name not in state.senders:
            raise node.error(f"no UA named {name!r} (declare it in `uas:` or let it send first)")
        return name

    def uri(self, node: Node, what: str) -> str:
        value = node.text(what)
        if not re.match(r"(sips?|tel):", value) and not VAR_REFERENCE.search(value):
            raise node.error(f"{what} should be a SIP URI (sip:user@host), not {value!r}")
        return value

    def status(self, node: Node) -> Status:
        value = node.scalar("reply")
        m = _STATUS.fullmatch(str(value)) if not isinstance(value, bool) else None
        if m is None:
            raise node.error(f"reply should be a status such as 200 or a class such as 2xx, not {value!r}")
        if m.group(2) == "xx":
            low = int(m.group(1)) * 100
            return Status(low, low + 99, str(value))
        return Status(int(value), int(value), str(value))

    def regex(self, node: Node) -> re.Pattern[str]:
        pattern = node.text("regex")
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise node.error(f"bad regex: {exc}") from None

    def header_values(self, node: Node | None) -> tuple[tuple[str, str | None], ...]:
        if node is None:
            return ()
        out: list[tuple[str, str | None]] = []
        for name, value in node.mapping(None, "headers").items():
            if value.is_null:
                out.append((name, None))     # leave out the template's (or the UA's default) header
                continue
            for v in value.seq_or_one():
                out.append((name, _text(v, name)))
        return tuple(out)

    def header_checks(self, node: Node | None) -> tuple[HeaderCheck, ...]:
        if node is None:
            return ()
        out: list[HeaderCheck] = []
        for name, value in node.mapping(None, "headers").items():
            if value.is_null:
                out.append(HeaderCheck(name, absent=True, pos=value.pos))
            elif value.is_mapping:
                f = value.mapping(("regex", "contains", "absent"), f"the check of {name}")
                if len(f) != 1:
                    raise value.error("a header check is one of regex, contains, absent")
                if "absent" in f:
                    if not f["absent"].boolean("absent"):
                        raise f["absent"].error("`absent: false` checks nothing: give the value instead")
                    out.append(HeaderCheck(name, absent=True, pos=value.pos))
                elif "regex" in f:
                    out.append(HeaderCheck(name, regex=self.regex(f["regex"]), pos=value.pos))
                else:
                    out.append(HeaderCheck(name, contains=f["contains"].text("contains"), pos=value.pos))
            else:
                out.append(HeaderCheck(name, exact=_text(value, name), pos=value.pos))
        return tuple(out)

    def body_check(self, node: Node) -> BodyCheck:
        if not node.is_mapping:
            return BodyCheck(exact=node.text("body"))
        f = node.mapping(("contains", "regex", "empty", "xpath"), "body")
        xpaths: list[tuple[str, Any]] = []
        if "xpath" in f:
            for expr, expected in f["xpath"].mapping(None, "xpath").items():
                try:
                    _compile_xpath(expr, self.namespaces)
                except etree.XPathError as exc:
                    raise f["xpath"].keys()[expr].error(f"bad XPath {expr!r}: {exc} (known prefixes: "
                                                        f"{', '.join(sorted(self.namespaces))})") from None
                xpaths.append((expr, expected.plain()))
        return BodyCheck(contains=f["contains"].text("contains") if "contains" in f else None,
                         regex=self.regex(f["regex"]) if "regex" in f else None,
                         empty=f["empty"].boolean("empty") if "empty" in f else None, xpath=tuple(xpaths))

    def captures(self, node: Node | None) -> tuple[Capture, ...]:
        if node is None:
            return ()
        out: list[Capture] = []
        for var, how in node.mapping(None, "capture").items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise node.keys()[var].error(f"{var!r} is not a variable name ($var(name))")
            if not how.is_mapping:
                out.append(Capture(var, header=how.text("a header name")))
                continue
            f = how.mapping(("header", "regex", "xpath"), f"capture {var}")
            if ("header" in f) == ("xpath" in f):
                raise how.error("a capture takes `header:` (and maybe `regex:`) or `xpath:`")
            xpath = None
            if "xpath" in f:
                xpath = f["xpath"].text("xpath")
                try:
                    _compile_xpath(xpath, self.namespaces)
                except etree.XPathError as exc:
                    raise f["xpath"].error(f"bad XPath: {exc}") from None
            rx = self.regex(f["regex"]) if "regex" in f else None
            if rx is not None and rx.groups > 1:
                raise f["regex"].error("a capture regex has at most one group (the value captured)")
            out.append(Capture(var, header=f["header"].text("header") if "header" in f else None, regex=rx,
                               xpath=xpath))
        return tuple(out)

    def answer(self, node: Node, skip: tuple[str, ...] = ()) -> Answer:
        if not node.is_mapping:
            return Answer(node.integer("a status", 100, 699))
        f = node.mapping(("status", "reason", "headers", "body", "content_type", "after", *skip), "an answer")
        if "status" not in f:
            raise node.error("an answer needs `status:`")
        return Answer(f["status"].integer("status", 100, 699),
                      f["reason"].text("reason") if "reason" in f else None,
                      self.header_values(f.get("headers")), f["body"].text("body") if "body" in f else None,
                      f["content_type"].text("content_type") if "content_type" in f else None,
                      f["after"].duration("after") if "after" in f else 0.0)

    def check_vars(self, node: Node, state: _ScenarioState) -> None:
        """A `$var(x)` used before any step captured it can never hold a value: refused here."""
        for n in node.walk():
            if isinstance(n.node.value, str):
                for m in VAR_REFERENCE.finditer(n.node.value):
                    if m.group(1) not in state.captured:
                        raise n.error(f"impossible: $var({m.group(1)}) is used before any step captures it")


class StepReader:
    """Steps one at a time, checked as a file's are (the pytest API): what earlier steps captured and
    sent is remembered, as within one scenario of a file."""

    def __init__(self, file: ScenarioFile) -> None:
        self._reader = _Reader(file.namespaces)
        self._reader.file = file
        self._state = _ScenarioState()

    def read(self, node: Node) -> Step:
        return self._reader.step(node, self._state)


@dataclass(slots=True)
class _ScenarioState:
    """What the steps before this one made possible (checked while reading)."""
    senders: set[str] = field(default_factory=set)
    captured: set[str] = field(default_factory=set)
    dialogs: set[str] = field(default_factory=set)
    last_sender: str | None = None


def _compile_xpath(expr: str, namespaces: dict[str, str]) -> None:
    """XPathError for a bad expression or an unknown prefix (lxml finds the latter only when the
    expression runs: it is run once on an empty element)."""
    etree.XPath(expr, namespaces=namespaces)(etree.Element("probe"))


def _text(node: Node, what: str) -> str:
    value = node.scalar(what)
    if value is None or isinstance(value, bool):
        raise node.error(f"{what} should be a value (write \"yes\" in quotes for the word)")
    return str(value)

