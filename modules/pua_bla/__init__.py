"""pua_bla - bridged line appearance (draft-anil-sipping-bla-03) through pua (OpenSIPS 3.4 pua_bla):
docs/modules/pua_bla.md.

The shared-line phones do not publish; they are subscribed to. `bla_set_flag()` marks a REGISTER of a
shared line; when save() stores (or removes) its contacts, pua SUBSCRIBEs to each phone's contact for
`Event: dialog;sla` (From the line, Contact `server_address`), for as long as the binding lives. The
phone NOTIFYs its calls to us; `bla_handle_notify()` turns each NOTIFY into a PUBLISH of the line's
dialog;sla state through pua (in-process to our presence, or to `presence_server`), with a
`header_name` header naming the phone, so presence NOTIFYs every other phone of the line but not it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from routescript.core.module import ConfigError, Module, Param, script_function
from routescript.script.context import REQUEST_ROUTE
from routescript.sip import ParseError, parse_uri

from .notify import DEFAULT_EXPIRES, BadNotify, BlaNotify, read_bla_notify

__all__ = ["BLA_EVENT", "MODULE", "PuaBlaModule"]

log = logging.getLogger("routescript.pua_bla")

BLA_EVENT = "dialog;sla"
CONTENT_TYPE = "application/dialog-info+xml"
MAX_MARKED = 4096   # bound: REGISTERs marked by bla_set_flag() whose save() has not run yet


def _sip_uri(value: str) -> None:
    try:
        parse_uri(value.strip())
    except ParseError as exc:
        raise ValueError(f"not a SIP URI: {exc}") from None


class PuaBlaModule(Module):
    name = "pua_bla"
    depends = ("pua", "usrloc")
    params = (
        Param("server_address", str, None, "our Contact in the SUBSCRIBEs to the phones (required)",
              check=_sip_uri),
        Param("default_domain", str, None, "the line's domain when the AoR has none (usrloc use_domain 0)"),
        Param("header_name", str, None, "the header naming the phone in the PUBLISH (required), e.g. Sender"),
        Param("outbound_proxy", str, None, "next hop of the SUBSCRIBEs (default: the contact's received "
              "address, else the contact)", check=_sip_uri),
        Param("presence_server", str, None, "outbound proxy of the PUBLISHes (default: our presence "
              "in-process)", check=_sip_uri),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.pua: Any = None
        self.clock = time.time
        # a marked REGISTER -> its From URI (OpenSIPS's is_bla_aor + reg_from_uri, process globals there;
        # here several REGISTERs may be in save() at once). Keyed by its Call-ID and by each of its
        # Contact URIs: a binding removed by a REGISTER with another Call-ID is found by its URI.
        self._marked: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.published = 0

    def check(self) -> None:
        from routescript.modules.pua import bind_pua

        for name in ("server_address", "header_name"):
            if not self.param(name):
                raise ConfigError(f"pua_bla: modparam(\"pua_bla\", \"{name}\", ...) is compulsory")
        if any(c in self.param("header_name") for c in ":\r\n \t"):
            raise ConfigError(f"pua_bla: header_name {self.param('header_name')!r} is no header name")
        self.pua = bind_pua(self.server)
        if self.pua is None:
            raise ConfigError("pua_bla needs the pua module loaded")

    async def start(self) -> None:
        from routescript.modules.usrloc import bind_usrloc

        usrloc = bind_usrloc(self.server)   # the loader has checked it is loaded (`depends`)
        if usrloc is None:
            raise ConfigError("pua_bla needs the usrloc module loaded (loadmodule \"usrloc.so\")")
        usrloc.register_ulcb(self._contacts_changed)

    # --- script -----------------------------------------------------------------------------------
    @script_function("bla_set_flag", routes=(REQUEST_ROUTE,))
    def bla_set_flag(self, ctx: Any) -> int:
        """Mark this REGISTER as one of a shared line: save() subscribes to its contacts."""
        msg = ctx.msg
        try:
            call_id, from_uri = msg.call_id, str(msg.from_.uri)
            uris = [str(c.uri) for c in msg.contacts if not c.star and c.uri is not None]
        except ParseError as exc:
            log.error("bla_set_flag: unreadable REGISTER: %s", exc)
            return -1
        for key in [("callid", call_id), *(("contact", uri) for uri in uris)]:
            self._marked[key] = from_uri
            self._marked.move_to_end(key)
        while len(self._marked) > MAX_MARKED:
            self._marked.popitem(last=False)
        return 1

    @script_function("bla_handle_notify", routes=(REQUEST_ROUTE,))
    def bla_handle_notify(self, ctx: Any) -> int:
        """A phone's NOTIFY as a PUBLISH of the line: 1 done (reply 2xx), -1 bad NOTIFY, -2 no such
        subscription (OpenSIPS's codes)."""
        msg = ctx.msg
        try:
            notify = read_bla_notify(msg)
        except BadNotify as exc:
            log.error("bla_handle_notify: NOTIFY %s: %s", _call_id(msg), exc)
            return -1
        if not self.pua.is_dialog(notify.call_id, notify.our_tag, notify.their_tag,
                                  terminated=notify.expires == 0):
            log.error("bla_handle_notify: NOTIFY %s in no subscription of ours", notify.call_id)
            return -2
        if not notify.body and notify.expires:
            return 1   # nothing to publish (OpenSIPS: Content-Length 0 is a success)
        return 1 if self._publish(notify) else -1

    def _publish(self, notify: BlaNotify) -> bool:
        self.published += 1
        return bool(self.pua.publish(notify.line_uri, BLA_EVENT, notify.body or None, id=notify.contact,
                                     expires=notify.expires, content_type=CONTENT_TYPE,
                                     outbound_proxy=self.param("presence_server"),
                                     sender=(self.param("header_name"), notify.contact),
                                     follows=(notify.call_id, notify.our_tag)))

    # --- usrloc callback --------------------------------------------------------------------------
    def _contacts_changed(self, changes: list[Any]) -> None:
        """OpenSIPS bla_contact_cb: each contact of a marked REGISTER is subscribed to (for what is left
        of its binding) or, removed, unsubscribed."""
        now = self.clock()
        for change in changes:
            contact = change.contact
            by_callid = self._marked.pop(("callid", contact.callid), None)
            by_uri = self._marked.pop(("contact", contact.contact), None)
            from_uri = by_callid or by_uri
            if from_uri is None:
                continue   # not a shared line's REGISTER
            watcher = self._line_uri(change.aor)
            if watcher is None:
                log.error("pua_bla: %s has no domain and default_domain is not set: not subscribed",
                          change.aor)
                continue
            if change.kind == "delete":
                expires = 0
            elif contact.expires == 0:
                expires = DEFAULT_EXPIRES   # a permanent binding: refreshed as long as it lives
            else:
                expires = max(0, int(contact.expires - now))
            self.pua.subscribe(contact.contact, watcher, BLA_EVENT, expires, to_uri=from_uri,
                               contact=self.param("server_address").strip(),
                               outbound_proxy=self.param("outbound_proxy") or contact.received or None)

    def _line_uri(self, aor: str) -> str | None:
        if "@" in aor:
            return f"sip:{aor}"
        domain = self.param("default_domain")
        return f"sip:{aor}@{domain}" if domain else None


def _call_id(msg: Any) -> str:
    try:
        return str(msg.call_id)
    except ParseError:
        return "?"


MODULE = PuaBlaModule
