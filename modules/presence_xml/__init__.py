"""presence_xml: the XML event packages of the presence server - presence (PIDF), presence.winfo
(watcherinfo) and dialog;sla - registered with the presence module as OpenSIPS's presence_xml does
(same order, so Allow-Events reads like OpenSIPS's). The document work is in pidf.py and winfo.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param
from routescript.db.url import check_db_url

if TYPE_CHECKING:
    from routescript.modules.presence import PresenceModule

    from .winfo import WatcherStatus

log = logging.getLogger("routescript.presence_xml")

def _check_xml(check: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """Wrap a pidf/xml check so its BodyError becomes the presence module's BodyError (logged with its
    detail, which never goes on the wire)."""
    from routescript.modules.presence.events import BodyError

    from .xml_util import BodyError as XmlBodyError

    def publ_handl(body: bytes) -> None:
        try:
            check(body)
        except XmlBodyError as exc:
            log.debug("PUBLISH body refused (%s): %s", exc.status, exc.detail or exc)
            raise BodyError(exc.status, exc.reason) from None
    return publ_handl


_WINFO_STATUS: dict[int, WatcherStatus] = {1: "active", 2: "pending", 3: "terminated", 4: "waiting"}


def _winfo_status(sub: Any) -> WatcherStatus:
    return _WINFO_STATUS.get(int(sub.status), "pending")


class PresenceXmlModule(Module):
    name = "presence_xml"
    depends = ("presence",)
    uses = ("xcap",)   # pres-rules read from xcap's table (integrated_xcap_server)
    params = (
        Param("db_url", str, None, "database of the xcap table (2.x scripts)", check=check_db_url),
        Param("xcap_table", str, "xcap"),
        Param("force_active", int, 0, "1: every watcher is allowed without pres-rules"),
        Param("integrated_xcap_server", int, 0, "rules read from the xcap table (2.x scripts)"),
        Param("pidf_manipulation", int, 0, later="PIDF manipulation (RFC 4827) is not built"),
        Param("xcap_server", str, None, multi=True, later="an external XCAP server is not supported"),
        Param("pres_rules_auid", str, None, later="custom pres-rules AUID is not built"),
        Param("pres_rules_filename", str, None, later="custom pres-rules filename is not built"),
        Param("generate_offline_body", int, 1, "0: a removed publication is not shown closed"),
    )

    _db: Any = None  # the 2.x form's database of the xcap table, opened on first use
    _presence: PresenceModule | None = None  # bound in check()
    _own_db: Any = None  # _db when it is ours (another xcap_table name) rather than the server's shared one

    def check(self) -> None:
        from routescript.modules.presence import bind_presence

        presence = bind_presence(self.server)
        if presence is None:
            raise ConfigError("presence_xml needs the presence module loaded before it")
        self._presence = presence
        for event in self.make_events():
            presence.add_event(event)

    def make_events(self) -> list[Any]:
        """presence, presence.winfo, dialog;sla - in OpenSIPS's order."""
        from routescript.modules.presence.events import WINFO_TYPE, PresenceEvent

        from . import pidf

        closed = bool(self.param("generate_offline_body"))

        def agg_nbody(pres_uri: str, bodies: Sequence[bytes], off_index: int | None) -> bytes:
            bodies = list(bodies)
            if off_index is not None:
                removed = bodies.pop(off_index)
                if closed:
                    bodies.append(pidf.closed_tuple_pidf(pres_uri, removed))
                if not bodies:
                    return pidf.offline_pidf(pres_uri)
            return pidf.aggregate_pidf(pres_uri, bodies)

        force_active = bool(self.param("force_active"))
        from .rules import auth_hooks

        presence = self._presence
        sphere_check = presence is not None and bool(presence.param("enable_sphere_check"))
        # enable_sphere_check: sphere conditions of pres-rules see the presentity's published RPID sphere.
        get_auth_status, apply_auth_nbody = auth_hooks(
            sphere_of=presence.get_sphere if presence is not None and sphere_check else None)
        fix_target = bool(presence.param("bla_fix_remote_target")) if presence is not None else True
        from routescript.modules.presence_dialoginfo.bla import bla_event

        async def get_rules_doc(user: str, domain: str) -> bytes | None:
            # pres-rules from the xcap table: through the xcap module (OpenSIPS 3.x scripts) or this
            # module's own db_url (2.x scripts); neither -> no rules -> the watcher stays pending.
            return await self._rules_doc(user, domain)

        return [
            PresenceEvent("presence", "application/pidf+xml", req_auth=not force_active,
                          get_rules_doc=get_rules_doc, get_auth_status=get_auth_status,
                          apply_auth_nbody=apply_auth_nbody, agg_nbody=agg_nbody,
                          evs_publ_handl=_check_xml(pidf.check_pidf),
                          build_empty_pres_info=pidf.offline_pidf),
            PresenceEvent("presence.winfo", "application/watcherinfo+xml", type=WINFO_TYPE,
                          winfo_body=self._winfo_body),
            # dialog;sla (BLA): one package definition whichever module registers it (see
            # presence_dialoginfo.bla); OpenSIPS registers it here, so Allow-Events keeps its order.
            bla_event(fix_remote_target=fix_target),
        ]

    async def _rules_doc(self, user: str, domain: str) -> bytes | None:
        try:
            from routescript.modules.xcap import bind_xcap, get_xcap_doc
        except ImportError:  # the xcap module is not installed
            return None
        xcap = bind_xcap(self.server)
        if xcap is not None and xcap.param("db_url"):
            doc: bytes | None = await xcap.get_rules_doc(user, domain)
            return doc
        url = self.param("db_url")
        if not url or not self.param("integrated_xcap_server"):
            return None
        if self._db is None:
            from routescript.db import open_database

            names = {"xcap": self.param("xcap_table")}
            if names["xcap"] != "xcap":
                self._db = self._own_db = await open_database(url, table_names=names)
            else:
                self._db = await self.server.database(url)
            await self._db.ensure_schema(["xcap"])
        stored: bytes | None = await get_xcap_doc(self._db, user, domain)
        return stored

    async def stop(self) -> None:
        """Close the database this module opened itself (its worker thread would keep the process
        alive after the server stopped); the shared one is the server's to close."""
        self._db = None
        if self._own_db is not None:
            db, self._own_db = self._own_db, None
            await db.close()

    @staticmethod
    def _winfo_body(pres_uri: str, watchers: Sequence[Any], version: int, state: str) -> bytes:
        from .winfo import WatcherInfo, winfo_document

        infos = []
        for w in watchers:
            if not w.callid:  # RFC 3858 requires the id; only a row written by something else lacks it
                log.warning("watcher %r of %r has no Call-ID: left out of the watcher list", w.watcher_uri,
                            pres_uri)
                continue
            infos.append(WatcherInfo(w.callid, w.watcher_uri, _winfo_status(w), "subscribe"))
        return winfo_document(pres_uri, infos, version, state)  # type: ignore[arg-type]


MODULE = PresenceXmlModule
