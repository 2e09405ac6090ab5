"""Reading XCAP documents (pres-rules, resource lists) from OpenSIPS's `xcap` table.

An integrated XCAP server (OpenXCAP and the like) writes the documents straight into the table; the presence
server only reads them. Columns (OpenSIPS xcap table, version 4): id, username, domain, doc (blob),
doc_type, etag, source, doc_uri, port; unique (username, domain, doc_type, doc_uri).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MAX_DOC_SIZE", "PIDF_MANIPULATION", "PRES_RULES", "RESOURCE_LISTS", "RLS_SERVICES",
           "get_xcap_doc"]

# doc_type values (OpenSIPS xcap module, xcap_functions.h).
PRES_RULES = 2
RESOURCE_LISTS = 3
RLS_SERVICES = 4
PIDF_MANIPULATION = 5

MAX_DOC_SIZE = 65536  # bound: the size the XML parser accepts; a larger document is never read into use

log = logging.getLogger("routescript.xcap")


async def get_xcap_doc(db: Any, username: str, domain: str, doc_type: int = PRES_RULES) -> bytes | None:
    """The document of `doc_type` stored for username@domain, or None when there is none.

    `db` is a routescript.db Database. Several rows can match (documents stored under different doc_uri);
    like OpenSIPS, which reads the first row its query returns, we take one - the oldest (lowest id), so
    the choice is stable. A document above MAX_DOC_SIZE is logged and treated as absent (for pres-rules
    that leaves watchers pending, the privacy-safe outcome). Database failures propagate as
    routescript.db.DatabaseError.
    """
    rows = await db.query("xcap", {"username": username, "domain": domain, "doc_type": doc_type},
                          columns=["doc"], order_by="id", limit=1)
    if not rows:
        return None
    doc = rows[0].get("doc")
    if doc is None:
        return None
    if isinstance(doc, str):  # a backend or a foreign writer that stored text
        doc = doc.encode("utf-8")
    doc = bytes(doc)
    if len(doc) > MAX_DOC_SIZE:
        log.warning("xcap document type %d of %s@%s is %d bytes (max %d): ignored", doc_type, username,
                    domain, len(doc), MAX_DOC_SIZE)
        return None
    return doc
