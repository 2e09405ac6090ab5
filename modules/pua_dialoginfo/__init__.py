"""pua_dialoginfo - dialog state published as dialog-info (RFC 4235) through pua (OpenSIPS 3.4
pua_dialoginfo): busy-lamp fields for the calls the proxy carries. docs/modules/pua_dialoginfo.md.

`dialoginfo_set([side])` on an initial INVITE, after `create_dialog()`, flags the dialog
(DLG_FLAG_PUA_DIALOGINFO) and keeps who the caller and callee are in the dialog's values (so a restart, or
another worker, publishes the same). The dialog module's state callback then publishes, per side:
    dialoginfo_set, publish_on_trying 1     -> trying      (both)
    UNCONFIRMED -> EARLY (18x)              -> early       (caller: confirmed with caller_confirmed 1)
    -> CONFIRMED_NA / CONFIRMED (2xx)       -> confirmed
    -> DELETED (BYE, failure, timeout)      -> terminated, Expires 0 (the publication is removed: watchers
                                               get the dialog gone from the full state - see the doc)
The ETag of each side's publication is kept in the dialog's values too; after a restart the dialog
module's on_loaded republishes the state of every flagged dialog, modifying the publications it made
before instead of leaving them behind.
"""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.module import Arg, ConfigError, Module, Param, script_function
from routescript.script.context import REQUEST_ROUTE
from routescript.sip import ParseError, parse_name_addr

from . import _dialog
from ._dialog import DLG_FLAG_PUA_DIALOGINFO, DlgState
from .xml import Party, build_dialoginfo

__all__ = ["DLG_FLAG_PUA_DIALOGINFO", "MODULE", "PuaDialoginfoModule", "build_dialoginfo"]

log = logging.getLogger("routescript.pua_dialoginfo")

EVENT = "dialog"
CONTENT_TYPE = "application/dialog-info+xml"
CREATED_LIFETIME = 3600      # Expires of trying/early publications (OpenSIPS DEFAULT_CREATED_LIFETIME)
CONFIRMED_LIFETIME = 43200   # of confirmed ones: the dialog module's default_timeout (OpenSIPS: dlg lifetime)
# The dialog values this module keeps (names starting with "__pua_dlginfo_": not the script's).
V_SIDES, V_CALLER, V_CALLEE = "__pua_dlginfo_sides", "__pua_dlginfo_a", "__pua_dlginfo_b"
V_ETAG = "__pua_dlginfo_etag_"   # + "A" / "B"

NO_OSIPS_PS = ("a presence server that needs the dialog-info version counted per publication is not "
               "supported: the version is left 0 for the presence server to number (OpenSIPS's default)")
NO_REQ_WITHIN = ("re-INVITEs do not republish (the dialog API has no in-dialog request callback); "
                 "publications are refreshed by pua until the dialog ends")
NO_BRANCH = "per-branch publications (branch_route) are not built: dialoginfo_set() publishes per dialog"


def _bool01(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("must be 0 or 1")


def _pv_spec(value: str) -> None:
    from routescript.modules.presence.bla import parse_pv_spec

    parse_pv_spec(value)


def _sides(value: Any) -> str:
    """dialoginfo_set's side: "A", "B", "AB" (either order) or absent (both)."""
    text = "" if value is None else str(value).strip().upper()
    if not text:
        return "AB"
    if not set(text) <= {"A", "B"}:
        raise ValueError(f"side must be \"A\", \"B\" or both, got {value!r}")
    return "".join(sorted(set(text)))


class PuaDialoginfoModule(Module):
    name = "pua_dialoginfo"
    depends = ("pua", "dialog")
    params = (
        Param("include_callid", int, 1, "1: the dialog element carries call-id", check=_bool01),
        Param("include_tags", int, 1, "1: local-tag and remote-tag", check=_bool01),
        Param("include_localremote", int, 1, "1: <local> and <remote> identities and targets",
              check=_bool01),
        Param("caller_confirmed", int, 0, "1: the caller's early state is published as confirmed",
              check=_bool01),
        Param("publish_on_trying", int, 0, "1: publish trying at dialoginfo_set()", check=_bool01),
        Param("presence_server", str, None, "where PUBLISHes go (default: our own presence in-process, "
              "else the presentity URI)"),
        Param("caller_spec_param", str, None, "pseudo-variable with the caller (name-addr)", check=_pv_spec),
        Param("callee_spec_param", str, None, "pseudo-variable with the callee (name-addr)", check=_pv_spec),
        Param("osips_ps", int, 1, later=NO_OSIPS_PS),
        Param("nopublish_flag", str, None, later=NO_REQ_WITHIN),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.refused = {"dialoginfo_set_branch_callee": NO_BRANCH, "dialoginfo_mute_branch": NO_BRANCH}
        self.pua: Any = None
        self.dialogs: Any = None
        self.published = 0

    def check(self) -> None:
        from routescript.modules.pua import bind_pua

        self.pua = bind_pua(self.server)
        if self.pua is None:
            raise ConfigError("pua_dialoginfo needs the pua module loaded")
        # The dialog API is found through the server's modules: during check() only when the dialog
        # module publishes it that early; otherwise at start() (before any message; the loader has
        # checked that dialog is loaded: `depends`).
        self._bind()

    def _bind(self) -> bool:
        if self.dialogs is not None:
            return True
        self.dialogs = _dialog.bind_dialog(self.server)
        if self.dialogs is None:
            return False
        self.dialogs.on_state_changed(self._state_changed)
        self.dialogs.on_loaded(self._loaded)
        return True

    async def start(self) -> None:
        early = self.dialogs is not None
        if not self._bind():
            raise ConfigError("pua_dialoginfo needs the dialog module loaded (loadmodule \"dialog.so\")")
        if not early:
            # Bound only now: the dialog module may have loaded its table (and fired on_loaded) in its
            # own start(), before this one. No message has been handled yet, so the live dialogs are
            # exactly the loaded ones: republish them here (none when dialog starts after us: then
            # on_loaded reaches _loaded).
            for dlg in self.dialogs.dialogs():
                self._loaded(dlg)

    # --- script ---------------------------------------------------------------------------------
    @script_function("dialoginfo_set", Arg("str", "side", optional=True, fixup=_sides),
                     routes=(REQUEST_ROUTE,))
    def dialoginfo_set(self, ctx: Any, side: str | None = None) -> int:
        """Publish dialog-info for the dialog of this INVITE (create_dialog() first)."""
        try:
            sides = _sides(side)
        except ValueError as exc:
            log.error("dialoginfo_set: %s", exc)
            return -1
        msg = ctx.msg
        if not self._bind():
            log.error("dialoginfo_set: the dialog module is not loaded")
            return -1
        dlg = self.dialogs.current(ctx)
        if dlg is None:
            log.error("dialoginfo_set: no dialog for %s (call create_dialog() first)",
                      getattr(msg, "call_id", "?"))
            return -1
        try:
            caller = self._party(ctx, self.param("caller_spec_param")) or _from_header(msg)
            callee = self._party(ctx, self.param("callee_spec_param")) or _callee_default(ctx)
        except (ParseError, ValueError) as exc:
            log.error("dialoginfo_set: %s: bad caller/callee: %s", getattr(msg, "call_id", "?"), exc)
            return -1
        for name, value in ((V_SIDES, sides), (V_CALLER, _render(caller)), (V_CALLEE, _render(callee))):
            self.dialogs.store_value(dlg.dlg_id, name, value)
        self.dialogs.set_flag(dlg.dlg_id, DLG_FLAG_PUA_DIALOGINFO)
        if self.param("publish_on_trying"):
            self._publish(dlg, "trying", "trying", CREATED_LIFETIME,
                          {V_SIDES: sides, V_CALLER: _render(caller), V_CALLEE: _render(callee)})
        return 1

    def _party(self, ctx: Any, spec: str | None) -> Party | None:
        if not spec:
            return None
        from routescript.modules.presence.bla import parse_pv_spec

        name, key = parse_pv_spec(spec)
        registry = self.server.registry
        pv = registry.pvars.get(name) if registry is not None else None
        value: Any = None
        if pv is not None:
            value = pv.getter(ctx, key, None)
        elif name == "var" and key is not None:
            value = ctx.vars.get(key)
        if value is None or value == "" or value == "<null>":
            return None
        na = parse_name_addr(str(value), "caller/callee")
        return Party(str(na.uri), na.display)

    # --- dialog callbacks -----------------------------------------------------------------------
    def _state_changed(self, dlg: Any, old: int, new: int, ctx: Any) -> None:
        if not dlg.flags & DLG_FLAG_PUA_DIALOGINFO:
            return
        if new == DlgState.EARLY and old < DlgState.EARLY:
            caller_state = "confirmed" if self.param("caller_confirmed") else "early"
            self._publish(dlg, caller_state, "early", CREATED_LIFETIME)
        elif new in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED) and old < DlgState.CONFIRMED_NA:
            self._publish(dlg, "confirmed", "confirmed", CONFIRMED_LIFETIME)
        elif new == DlgState.DELETED and old != DlgState.DELETED and \
                (old >= DlgState.EARLY or self.param("publish_on_trying")):
            self._publish(dlg, "terminated", "terminated", 0)

    def _loaded(self, dlg: Any) -> None:
        """After a restart: the state of a flagged live dialog published again (its kept ETags let the
        earlier publications be modified, not duplicated)."""
        if not dlg.flags & DLG_FLAG_PUA_DIALOGINFO:
            return
        if dlg.state in (DlgState.CONFIRMED_NA, DlgState.CONFIRMED):
            self._publish(dlg, "confirmed", "confirmed", CONFIRMED_LIFETIME)
        elif dlg.state == DlgState.EARLY:
            caller_state = "confirmed" if self.param("caller_confirmed") else "early"
            self._publish(dlg, caller_state, "early", CREATED_LIFETIME)

    def _publish(self, dlg: Any, caller_state: str, callee_state: str, expires: int,
                 values: dict[str, str] | None = None) -> None:
        vals = values if values is not None else dlg.values
        sides = vals.get(V_SIDES, "AB")
        try:
            caller = _parse_party(vals.get(V_CALLER)) or Party(dlg.from_uri)
            callee = _parse_party(vals.get(V_CALLEE)) or Party(dlg.req_uri or dlg.to_uri)
        except ParseError as exc:
            log.error("pua_dialoginfo: dialog %s (%s): bad caller/callee: %s", dlg.dlg_id, dlg.call_id, exc)
            return
        caller = Party(caller.uri, caller.display, dlg.caller_contact)
        callee = Party(callee.uri, callee.display, dlg.callee_contact)
        for side in sides:
            initiator = side == "A"
            local, remote = (caller, callee) if initiator else (callee, caller)
            local_tag, remote_tag = (dlg.from_tag, dlg.to_tag) if initiator else (dlg.to_tag, dlg.from_tag)
            try:
                body = build_dialoginfo(caller_state if initiator else callee_state, local, remote,
                                        call_id=dlg.call_id, initiator=initiator, local_tag=local_tag,
                                        remote_tag=remote_tag,
                                        include_callid=bool(self.param("include_callid")),
                                        include_tags=bool(self.param("include_tags")),
                                        include_localremote=bool(self.param("include_localremote")))
            except ValueError as exc:
                log.error("pua_dialoginfo: dialog %s (%s): no document: %s", dlg.dlg_id, dlg.call_id, exc)
                continue
            kept = vals.get(V_ETAG + side) or None
            self.published += 1
            self.pua.publish(local.uri, EVENT, body, id=f"{dlg.dlg_id}/{side}", expires=expires,
                             content_type=CONTENT_TYPE, outbound_proxy=self.param("presence_server"),
                             etag=kept, on_etag=self._etag_keeper(dlg.dlg_id, side, expires == 0),
                             follows=(dlg.call_id, ""))

    def _etag_keeper(self, dlg_id: str, side: str, ending: bool) -> Any:
        def keep(etag: str | None) -> None:
            if ending or etag is None:
                return   # the dialog is gone (its values with it) or the state is being published afresh
            try:
                self.dialogs.store_value(dlg_id, V_ETAG + side, etag)
            except Exception:  # noqa: BLE001 - the dialog may have ended meanwhile
                log.debug("pua_dialoginfo: dialog %s gone before its ETag was kept", dlg_id)
        return keep


def _render(party: Party) -> str:
    display = (party.display or "").replace("\\", "\\\\").replace('"', '\\"')
    return f"\"{display}\" <{party.uri}>" if party.display else f"<{party.uri}>"


def _parse_party(text: str | None) -> Party | None:
    if not text:
        return None
    na = parse_name_addr(text, "caller/callee")
    return Party(str(na.uri), na.display)


def _from_header(msg: Any) -> Party:
    fr = msg.from_
    return Party(str(fr.uri), fr.display)


def _callee_default(ctx: Any) -> Party:
    """OpenSIPS: the To display name and the Request-URI (as it is when dialoginfo_set() runs)."""
    msg = ctx.msg
    registry = ctx.server.registry if ctx.server is not None else None
    ru = None
    pv = registry.pvars.get("ru") if registry is not None else None
    if pv is not None:
        ru = pv.getter(ctx, None, None)
    uri = str(ru) if ru else str(msg.uri)
    return Party(uri, msg.to.display)


MODULE = PuaDialoginfoModule
