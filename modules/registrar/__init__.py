"""registrar - REGISTER processing and contact lookup over usrloc (OpenSIPS 3.4 registrar).
docs/modules/registrar.md lists every parameter, flag and function with where we differ.

save() reads the REGISTER into RegisterFacts, `save.decide()` (sans-IO, RFC 3261 10.3) says what
changes, usrloc stores them (by its db_mode) and announces them to the other workers, then the 200 OK
lists every binding. lookup() rewrites the Request-URI to the best contact and appends the others as
branches for t_relay() to fork to in parallel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from routescript.core.branch_functions import MAX_BRANCHES
from routescript.core.module import Arg, ConfigError, Module, Param, script_function
from routescript.modules.usrloc import UsrlocError, UsrlocModule, bind_usrloc
from routescript.modules.usrloc.core import Contact, aor_parts, best_first
from routescript.script.context import (
    BRANCH_ROUTE,
    FAILURE_ROUTE,
    ONREPLY_ROUTE,
    REQUEST_ROUTE,
    Branch,
    MsgContext,
)
from routescript.script.pv_message import set_ruri
from routescript.sip import ParseError, SIPRequest, parse_name_addr
from routescript.sip.headers import split_values

from .save import (
    METHOD_BITS,
    OTHER_METHOD,
    RegContact,
    RegisterFacts,
    RegisterRefused,
    SaveSettings,
    check_lengths,
    decide,
    methods_mask,
    parse_q,
)

log = logging.getLogger("routescript.registrar")

_ROUTES = (REQUEST_ROUTE, FAILURE_ROUTE)
_LOOKUP_ROUTES = (REQUEST_ROUTE, FAILURE_ROUTE)
_CHECK_ROUTES = (REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE, ONREPLY_ROUTE)

@dataclass(slots=True)
class _SaveFlags:
    memory_only: bool = False
    no_reply: bool = False
    socket_header: bool = False
    force: bool = False
    max_contacts: int | None = None
    min_expires: int | None = None
    max_expires: int | None = None
    path: str | None = None        # None (Path ignored), "off", "lazy", "strict"
    path_received: bool = False


def parse_save_flags(text: str | None) -> _SaveFlags:
    """"memory-only", "no-reply", "socket-header", "force-registration", "max-contacts=N",
    "min-expires=N", "max-expires=N", "path-off", "path-lazy", "path-strict", "path-received",
    separated by ';' or ','; also the 2.x letters m r s f cNN eNN ENN p0 p1 p2 v."""
    flags = _SaveFlags()
    if not text:
        return flags
    items = [t.strip() for t in text.replace(",", ";").split(";") if t.strip()]
    if len(items) == 1 and "-" not in items[0] and "=" not in items[0]:
        items = _letters(items[0])
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip().lower()
        try:
            if name in ("memory-only", "m"):
                flags.memory_only = True
            elif name in ("no-reply", "r"):
                flags.no_reply = True
            elif name in ("socket-header", "s"):
                flags.socket_header = True
            elif name in ("force-registration", "f"):
                flags.force = True
            elif name == "max-contacts":
                flags.max_contacts = _nonneg(value)
            elif name == "min-expires":
                flags.min_expires = _nonneg(value)
            elif name == "max-expires":
                flags.max_expires = _nonneg(value)
            elif name in ("path-off", "p0"):
                flags.path = "off"
            elif name in ("path-lazy", "p1"):
                flags.path = "lazy"
            elif name in ("path-strict", "p2"):
                flags.path = "strict"
            elif name in ("path-received", "v"):
                flags.path_received = True
            elif name.startswith(("pn-", "ua-filtering")):
                raise ValueError(f"save() flag '{item}': push notifications / UA filtering are not built")
            else:
                raise ValueError(f"unknown save() flag '{item}'")
        except ValueError as exc:
            raise ValueError(f"save() flag '{item}': {exc}") from None
    return flags


def _letters(text: str) -> list[str]:
    """2.x style: "mrc5e60E3600p2" -> ["m", "r", "c=5", "e=60", "E=3600", "p2"]."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "ceE":
            j = i + 1
            while j < len(text) and text[j].isdigit():
                j += 1
            name = {"c": "max-contacts", "e": "min-expires", "E": "max-expires"}[ch]
            out.append(f"{name}={text[i + 1:j]}")
            i = j
        elif ch == "p" and i + 1 < len(text) and text[i + 1] in "012":
            out.append(text[i:i + 2])
            i += 2
        else:
            out.append(ch)
            i += 1
    return out


def _nonneg(value: str) -> int:
    number = int(value.strip())
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _check_save_flags(value: Any) -> Any:
    parse_save_flags(str(value))
    return value


# lookup() flags: "method-filtering"/"m", "no-branches"/"b"
def parse_lookup_flags(text: str | None) -> tuple[bool, bool]:
    method_filter = no_branches = False
    if not text:
        return method_filter, no_branches
    items = [t.strip() for t in text.replace(",", ";").split(";") if t.strip()]
    if len(items) == 1 and "-" not in items[0] and "=" not in items[0]:
        items = list(items[0])
    for item in items:
        name = item.lower()
        if name in ("method-filtering", "m"):
            method_filter = True
        elif name in ("no-branches", "b"):
            no_branches = True
        elif name in ("r", "regexp", "u", "ua-filtering", "i", "e", "global", "g"):
            raise ValueError(f"lookup() flag '{item}' is not built (regexp AoRs, UA filtering, "
                             f"global lookups)")
        else:
            raise ValueError(f"unknown lookup() flag '{item}'")
    return method_filter, no_branches


def _check_lookup_flags(value: Any) -> Any:
    parse_lookup_flags(str(value))
    return value


def _static_domain(value: Any) -> Any:
    text = str(value).strip()
    if not text or not text.replace("_", "a").isalnum():
        raise ValueError(f"usrloc domain {value!r}: a table name ([A-Za-z0-9_])")
    return text


class RegistrarModule(Module):
    name = "registrar"
    depends = ("usrloc",)
    params = (
        Param("default_expires", int, 3600, "expires of a Contact with none given"),
        Param("min_expires", int, 60, "below it (not 0): 423 Interval Too Brief with Min-Expires; "
              "0 disables"),
        Param("max_expires", int, 0, "above it the expires is lowered to it; 0 disables"),
        Param("default_q", int, -1, "q x 1000 of a Contact without q (-1: none, as unspecified)"),
        Param("case_sensitive", int, 1, "AoRs compared case-sensitively (RFC 3261)"),
        Param("realm_prefix", str, "", "prefix removed from the AoR's domain (\"sip.\")"),
        Param("received_avp", str, "", "AVP whose value is stored as the binding's received URI"),
        Param("received_param", str, "received", "the Contact parameter naming it in the 200 OK"),
        Param("max_contacts", int, 0, "bindings per AoR (0: no limit); save()'s max-contacts overrides"),
        Param("retry_after", int, 0, "Retry-After of the 503 sent over max_contacts (0: none)"),
        Param("sock_hdr_name", str, "", "header naming the socket to store (save() flag socket-header)"),
        Param("attr_avp", str, "", "AVP stored with each binding and given back by lookup()"),
        Param("tcp_persistent_flag", str, "", later="TCP connection lifetimes follow "
              "tcp_connection_lifetime; binding them to the registration is not built"),
        Param("mcontact_avp", str, "", later="cached registrations (mid_registrar) are not built"),
        Param("gruu_secret", str, "", later="GRUU (RFC 5627) is not built"),
        Param("disable_gruu", int, 1, later="GRUU (RFC 5627) is not built"),
        Param("pn_enable", int, 0, later="push notifications (RFC 8599) are not built"),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.refused["is_ip_registered"] = "is_ip_registered() is not built"
        self.refused["is_other_contact"] = "is_other_contact() is not built"
        self.refused["add_sock_hdr"] = "add_sock_hdr() is not built"
        self._usrloc: UsrlocModule | None = None

    def check(self) -> None:
        for name in ("default_expires", "min_expires", "max_expires", "max_contacts", "retry_after"):
            if self.param(name) < 0:
                raise ConfigError(f"registrar: {name} must not be negative")
        q = self.param("default_q")
        if q != -1 and not 0 <= q <= 1000:
            raise ConfigError("registrar: default_q is -1 or 0..1000 (q x 1000)")
        for name in ("received_avp", "attr_avp"):
            value = self.param(name)
            if value and not (value.startswith("$avp(") and value.endswith(")")):
                raise ConfigError(f"registrar: {name} must name an AVP ($avp(name)), got {value!r}")
        stats = self.server.statistics
        stats.register("registrar", "max_expires", func=lambda: self.param("max_expires"))
        stats.register("registrar", "max_contacts", func=lambda: self.param("max_contacts"))
        stats.register("registrar", "default_expire", func=lambda: self.param("default_expires"))
        self.accepted = stats.register("registrar", "accepted_regs")
        self.rejected = stats.register("registrar", "rejected_regs")

    @property
    def usrloc(self) -> UsrlocModule:
        if self._usrloc is None:
            module = bind_usrloc(self.server)
            if module is None or module.service is None:
                raise RuntimeError("registrar: usrloc is not loaded or not started")
            self._usrloc = module
        return self._usrloc

    # --- helpers -----------------------------------------------------------------------------------
    def _aor_of(self, uri_text: str) -> tuple[str, str, str | None]:
        """(AoR key, username, domain) of a URI by use_domain, realm_prefix and case_sensitive."""
        from routescript.sip import parse_uri
        uri = parse_uri(uri_text.strip())
        user = uri.user or ""
        host = uri.host.lower()
        prefix = self.param("realm_prefix")
        if prefix and host.startswith(prefix.lower()) and len(host) > len(prefix):
            host = host[len(prefix):]
        if not self.param("case_sensitive"):
            user = user.lower()
        use_domain = bool(self.usrloc.param("use_domain"))
        aor = f"{user}@{host}" if use_domain else user
        if len(aor) > 255 or not user:
            raise RegisterRefused(400, "Bad AOR" if user else "Missing AOR username")
        username, domain = aor_parts(aor, use_domain)
        return aor, username, domain

    @staticmethod
    def _avp(ctx: MsgContext, spec: str) -> Any:
        if not spec:
            return None
        values = ctx.avps.get(spec[5:-1])
        return values[0] if values else None

    def _reply(self, ctx: MsgContext, code: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
               ) -> None:
        try:
            self.server.reply(ctx, code, reason, headers=headers)
        except Exception:  # a reply that cannot go out is logged, the script goes on
            log.exception("registrar: sending %d %s failed", code, reason)

    # --- save ------------------------------------------------------------------------------------
    def _facts(self, ctx: MsgContext, msg: SIPRequest, flags: _SaveFlags, aor_arg: str | None
               ) -> tuple[RegisterFacts, str | None]:
        try:
            aor, username, domain = self._aor_of(aor_arg if aor_arg else str(msg.to.uri))
            contacts = msg.contacts
            expires_header = msg.expires
            callid, cseq = msg.call_id, msg.cseq.number
        except ParseError as exc:
            raise RegisterRefused(400, exc.reason) from None
        star = any(c.star for c in contacts)
        if star and len(contacts) > 1:
            raise RegisterRefused(400, "Invalid Contact: * with other Contacts")
        if len(contacts) > 100:
            raise RegisterRefused(400, "Too many Contacts (more than 100)")
        reg: list[RegContact] = []
        for c in contacts:
            if c.star:
                continue
            uri = str(c.uri)
            check_lengths(uri, {})
            try:
                expires = c.expires
            except ParseError:
                raise RegisterRefused(400, "Bad Contact expires") from None
            q = parse_q(c.param("q"))
            instance = c.param("+sip.instance")
            reg_id_text = c.param("reg-id")
            try:
                reg_id = int(reg_id_text) if reg_id_text else 0
            except ValueError:
                raise RegisterRefused(400, "Bad reg-id") from None
            if instance is not None and not instance.strip():
                instance = None
            reg.append(RegContact(uri, expires, q, f'"{instance}"' if instance and not instance.startswith(
                '"') else instance, reg_id if instance else 0))
        # Path (RFC 3327)
        path: str | None = None
        supported = {v.strip().lower() for v in msg.header_values("supported")}
        path_values = msg.header_values("path")
        if path_values and flags.path is not None:
            if flags.path == "strict" and "path" not in supported:
                raise RegisterRefused(420, "Bad Extension", (("Unsupported", "path"),))
            path = ",".join(v.strip() for v in path_values)
        received = self._avp(ctx, self.param("received_avp"))
        if flags.path_received and path:
            try:
                first = parse_name_addr(split_values(path)[0], "Path").uri
                rcv = first.param("received")
                if rcv:
                    received = rcv.strip('"')
            except ParseError:
                raise RegisterRefused(400, "Bad Path header") from None
        socket = str(ctx.source.socket) if ctx.source is not None else None
        if flags.socket_header and self.param("sock_hdr_name"):
            socket = msg.header(self.param("sock_hdr_name")) or socket
        allow = msg.header_values("allow") if msg.has_header("allow") else None
        attr = self._avp(ctx, self.param("attr_avp"))
        facts = RegisterFacts(
            aor=aor, username=username, domain=domain, callid=callid, cseq=cseq, star=star,
            contacts=tuple(reg), expires_header=expires_header,
            received=None if received is None else str(received), path=path, socket=socket,
            user_agent=(msg.header("user-agent") or "")[:255], methods=methods_mask(allow),
            cflags=ctx.bflags, attr=None if attr is None else str(attr))
        check_lengths("", {"Path": path, "received": facts.received, "Call-ID": callid,
                           "attr": facts.attr, "socket": socket})
        echo_path = path if (path and (flags.path == "strict" or
                                       (flags.path == "lazy" and "path" in supported))) else None
        return facts, echo_path

    def _settings(self, flags: _SaveFlags) -> SaveSettings:
        ul = self.usrloc
        q = self.param("default_q")
        return SaveSettings(
            default_expires=self.param("default_expires"),
            min_expires=self.param("min_expires") if flags.min_expires is None else flags.min_expires,
            max_expires=self.param("max_expires") if flags.max_expires is None else flags.max_expires,
            default_q=-1.0 if q == -1 else q / 1000,
            max_contacts=self.param("max_contacts") if flags.max_contacts is None else flags.max_contacts,
            matching_mode=ul.param("matching_mode"), cseq_delay=ul.param("cseq_delay"), force=flags.force)

    @script_function("save", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "flags", optional=True,
                                                                  fixup=_check_save_flags),
        Arg("str", "aor", optional=True),
        routes=_ROUTES)
    async def save(self, ctx: MsgContext, domain: str, flags: str | None = None,
                   aor: str | None = None) -> int:
        """1 stored (and 200 sent), -1 refused (the error reply sent) or failed."""
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return -1
        try:
            fl = parse_save_flags(flags)
        except ValueError as exc:
            log.error("registrar: save(): %s", exc)
            return -1
        ul = self.usrloc
        service = ul.service
        assert service is not None
        try:
            facts, echo_path = self._facts(ctx, msg, fl, aor)
            current = await service.contacts(domain, facts.aor)
            now = int(service.clock())
            result = decide(facts, current, self._settings(fl), now, domain)
            if fl.memory_only and service.db_mode in (1, 3):
                # memory-only: kept in memory, not written (db_mode 3 has no memory: refused there)
                if service.db_mode == 3:
                    raise RegisterRefused(500, "Server Internal Error")
                dom = await service.domain(domain)
                for change in result.changes:
                    dom.apply(change)
                service._announce(result.changes)
            else:
                await service.commit(result.changes)
        except RegisterRefused as exc:
            self.rejected.inc()
            headers = exc.headers
            if exc.code == 503 and self.param("retry_after"):
                headers += (("Retry-After", str(self.param("retry_after"))),)
            log.info("registrar: REGISTER %s refused: %d %s", msg.call_id, exc.code, exc.reason)
            if not fl.no_reply:
                self._reply(ctx, exc.code, exc.reason, headers)
            return -1
        except UsrlocError as exc:
            self.rejected.inc()
            log.error("registrar: REGISTER %s not stored: %s", msg.call_id, exc)
            if not fl.no_reply:
                self._reply(ctx, 503 if exc.transient else 500,
                            "Service Unavailable" if exc.transient else "Server Internal Error")
            return -1
        self.accepted.inc()
        if not fl.no_reply:
            self._reply(ctx, 200, "OK", self._contact_headers(result.bindings, now, echo_path))
        return 1

    def _contact_headers(self, bindings: list[Contact], now: int, path: str | None
                         ) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        rparam = self.param("received_param")
        for c in bindings:
            if not c.alive(now):
                continue
            value = f"<{c.contact}>;expires={c.remaining(now)}"
            if c.q >= 0:
                value += f";q={_q_text(c.q)}"
            if c.received and rparam:
                value += f';{rparam}="{c.received}"'
            if c.sip_instance:
                value += f";+sip.instance={c.sip_instance}"
            if c.reg_id:
                value += f";reg-id={c.reg_id}"
            out.append(("Contact", value))
        if path:
            out.append(("Path", path))
        return tuple(out)

    # --- lookup ----------------------------------------------------------------------------------
    @script_function("lookup", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "flags", optional=True,
                                                                  fixup=_check_lookup_flags),
        Arg("str", "aor", optional=True),
        routes=_LOOKUP_ROUTES)
    async def lookup(self, ctx: MsgContext, domain: str, flags: str | None = None, aor: str | None = None
                     ) -> int:
        """1 found (R-URI rewritten, branches added), -1 not found, -2 method not allowed by any
        contact, -3 internal error."""
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return -3
        try:
            method_filter, no_branches = parse_lookup_flags(flags)
            key = self._aor_of(aor if aor else msg.ruri)[0]
        except (ValueError, ParseError, RegisterRefused) as exc:
            log.error("registrar: lookup(): %s", exc)
            return -3 if isinstance(exc, ValueError) else -1
        service = self.usrloc.service
        assert service is not None
        try:
            contacts = await service.contacts(domain, key)
        except UsrlocError as exc:
            log.error("registrar: lookup(%s): %s", key, exc)
            return -3
        if not contacts:
            return -1
        if method_filter:
            bit = METHOD_BITS.get(msg.method.upper(), OTHER_METHOD)
            contacts = [c for c in contacts if c.methods is None or c.methods & bit]
            if not contacts:
                return -2
        ordered = best_first(contacts)
        if no_branches:
            ordered = ordered[:1]
        first, rest = ordered[0], ordered[1:]
        attr_avp = self.param("attr_avp")
        try:
            set_ruri(ctx, None, None, first.contact)
        except ValueError as exc:
            log.error("registrar: lookup(%s): stored contact %r unusable: %s", key, first.contact, exc)
            return -3
        ctx.dst_uri = self._dst_of(first)
        if first.path:
            for value in reversed(split_values(first.path)):
                msg.add_header("Route", value, first=True)
        ctx.bflags |= first.cflags
        sock = self._socket(ctx, first.socket)
        if sock is not None:
            ctx.send_socket = sock
        if attr_avp:
            ctx.avps[attr_avp[5:-1]] = [c.attr or "" for c in reversed(ordered)]
        room = MAX_BRANCHES - 1 - len(ctx.branches or ())
        for c in rest[:max(0, room)]:
            branch = Branch(c.contact, None if c.path else (c.received or None), c.path,
                            None if c.q < 0 else c.q, c.cflags, self._socket(ctx, c.socket))
            if ctx.branches is None:
                ctx.branches = [branch]
            else:
                ctx.branches.append(branch)
        return 1

    @staticmethod
    def _dst_of(c: Contact) -> str | None:
        if c.path:
            try:
                return str(parse_name_addr(split_values(c.path)[0], "Path").uri)
            except ParseError:
                return None
        return c.received or None

    @staticmethod
    def _socket(ctx: MsgContext, name: str | None) -> Any:
        if not name or ctx.server is None:
            return None
        return next((s for s in getattr(ctx.server, "sockets", ()) if str(s) == name), None)

    # --- checks ----------------------------------------------------------------------------------
    async def _live(self, ctx: MsgContext, domain: str, aor: str | None) -> list[Contact] | None:
        msg = ctx.msg
        if aor is None and not isinstance(msg, SIPRequest):
            return None
        try:
            text = aor if aor else (str(msg.to.uri) if msg.method == "REGISTER" else msg.ruri)  # type: ignore[union-attr]
            key = self._aor_of(text)[0]
            service = self.usrloc.service
            assert service is not None
            return list(await service.contacts(domain, key))
        except (ParseError, RegisterRefused, UsrlocError) as exc:
            log.error("registrar: %s", exc)
            return None

    @script_function("registered", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "aor", optional=True),
        Arg("str", "callid", optional=True),
        routes=_CHECK_ROUTES)
    async def registered(self, ctx: MsgContext, domain: str, aor: str | None = None,
                         callid: str | None = None) -> int:
        """1 when the AoR (R-URI, or `aor`) has a live binding (with that Call-ID when given)."""
        contacts = await self._live(ctx, domain, aor)
        if not contacts:
            return -1
        if callid is not None and not any(c.callid == callid for c in contacts):
            return -1
        return 1

    async def _checked_bindings(self, ctx: MsgContext, domain: str, aor: str | None) -> list[Contact] | None:
        """The live bindings is_registered()/is_contact_registered() check: of `aor`, else of the From of
        a request other than REGISTER (the To of a REGISTER: _live's default). None: a From that does
        not parse."""
        msg = ctx.msg
        if aor is None and isinstance(msg, SIPRequest) and msg.method != "REGISTER":
            try:
                aor = str(msg.from_.uri)
            except ParseError:
                return None
        return await self._live(ctx, domain, aor)

    @script_function("is_registered", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "aor", optional=True),
        routes=_CHECK_ROUTES)
    async def is_registered(self, ctx: MsgContext, domain: str, aor: str | None = None) -> int:
        """1 when the AoR (From of a non-REGISTER, To of a REGISTER, or `aor`) has a live binding."""
        contacts = await self._checked_bindings(ctx, domain, aor)
        return 1 if contacts else -1

    @script_function("is_contact_registered", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "aor", optional=True),
        Arg("str", "contact", optional=True),
        Arg("str", "callid", optional=True),
        routes=_CHECK_ROUTES)
    async def is_contact_registered(self, ctx: MsgContext, domain: str, aor: str | None = None,
                                    contact: str | None = None, callid: str | None = None) -> int:
        """1 when the AoR has a binding with that contact URI (default: the request's Contacts) and/or
        Call-ID."""
        msg = ctx.msg
        contacts = await self._checked_bindings(ctx, domain, aor)
        if not contacts:
            return -1
        wanted: set[str] = set()
        if contact is not None:
            wanted = {contact}
        elif callid is None and isinstance(msg, SIPRequest):
            try:
                wanted = {str(c.uri) for c in msg.contacts if not c.star}
            except ParseError:
                return -1
        for c in contacts:
            if (not wanted or c.contact in wanted) and (callid is None or c.callid == callid):
                return 1
        return -1

    @script_function("remove", Arg(
        "str", "domain", fixup=_static_domain, static=True),
        Arg("str", "aor"),
        Arg("str", "contact", optional=True),
        routes=(REQUEST_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE, BRANCH_ROUTE, "startup", "timer", "event"))
    async def remove(self, ctx: MsgContext, domain: str, aor: str, contact: str | None = None) -> int:
        """Remove every binding of `aor`, or those whose contact URI is `contact`. 1 when something was
        removed, -1 when nothing matched, -2 on a storage error."""
        from routescript.modules.usrloc.core import Change
        try:
            key = self._aor_of(aor if ":" in aor else f"sip:{aor}")[0]
        except (ParseError, RegisterRefused) as exc:
            log.error("registrar: remove(%s): %s", aor, exc)
            return -1
        service = self.usrloc.service
        assert service is not None
        try:
            contacts = await service.contacts(domain, key)
            gone = [c for c in contacts if contact is None or c.contact == contact]
            if not gone:
                return -1
            await service.commit([Change("delete", domain, key, c) for c in gone])
        except UsrlocError as exc:
            log.error("registrar: remove(%s): %s", aor, exc)
            return -2
        return 1


def _q_text(q: float) -> str:
    text = f"{q:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


MODULE = RegistrarModule
