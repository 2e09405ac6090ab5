"""xcap: parameters and document access shared by the modules that use XCAP documents (OpenSIPS's xcap
module; used by presence_xml for pres-rules).

OpenSIPS 3.x scripts configure it as
    loadmodule "xcap.so"
    modparam("xcap", "db_url", "sqlite:///var/lib/opensips/opensips.db")
    modparam("xcap", "integrated_xcap_server", 1)
Documents are read straight from the `xcap` table (store.py). With integrated_xcap_server = 0 OpenSIPS
would also fetch missing documents from an external XCAP server through xcap_client; that client is not
built, so both values read the table only (the table is where OpenXCAP-style servers write anyway).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param
from routescript.db.url import check_db_url

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

from .store import PIDF_MANIPULATION, PRES_RULES, RESOURCE_LISTS, RLS_SERVICES, get_xcap_doc

__all__ = ["MODULE", "PIDF_MANIPULATION", "PRES_RULES", "RESOURCE_LISTS", "RLS_SERVICES", "XcapModule",
           "bind_xcap", "get_xcap_doc"]

log = logging.getLogger("routescript.xcap")


def _flag(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def bind_xcap(server: object) -> XcapModule | None:
    """OpenSIPS's bind_xcap: the xcap module instance of a server, or None when it is not loaded. Any
    object is accepted (None for one without modules), as presence's bind_presence does."""
    modules = getattr(server, "modules", None)
    found = modules.get("xcap") if modules is not None else None
    return found if isinstance(found, XcapModule) else None


class XcapModule(Module):
    name = "xcap"
    db_url_from_default = "db_url"   # OpenSIPS: init_db_url(db_url, ...)
    params = (
        # OpenSIPS's default is a MySQL URL; there is no MySQL backend here, so unset means "no database".
        Param("db_url", str, None, "database holding the xcap table", check=check_db_url),
        Param("xcap_table", str, "xcap"),
        Param("integrated_xcap_server", int, 0, "documents written to the table by an XCAP server",
              check=_flag),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._db: Any = None
        self._own_db: Any = None

    @property
    def integrated_server(self) -> bool:
        return bool(self.param("integrated_xcap_server"))

    def check(self) -> None:
        if self.integrated_server and not self.param("db_url"):
            raise ConfigError('xcap: integrated_xcap_server needs modparam("xcap", "db_url", ...)')

    async def start(self) -> None:
        url = self.param("db_url")
        if not url:
            return
        table = self.param("xcap_table")
        if table != "xcap":
            from routescript.db import open_database
            self._db = self._own_db = await open_database(url, table_names={"xcap": table})
        else:
            self._db = await self.server.database(url)
        await self._db.ensure_schema(["xcap"])

    async def stop(self) -> None:
        if self._own_db is not None:
            await self._own_db.close()
            self._own_db = None
        self._db = None

    async def get_xcap_doc(self, username: str, domain: str, doc_type: int = PRES_RULES) -> bytes | None:
        """The stored document of `doc_type` for username@domain (None: none stored, or no db_url)."""
        if self._db is None:
            return None
        return await get_xcap_doc(self._db, username, domain, doc_type)

    async def get_rules_doc(self, username: str, domain: str) -> bytes | None:
        """The pres-rules document of a presentity (presence's get_rules_doc hook)."""
        return await self.get_xcap_doc(username, domain, PRES_RULES)


MODULE = XcapModule
