#!/usr/bin/env python3
"""Store a pres-rules document (RFC 5025) for a user in the `xcap` table, as an integrated XCAP server
does, then (with --mi) tell the running server to judge that user's watchers again (MI refreshWatchers
type 0).

    .venv/bin/python examples/load-pres-rules.py sqlite:///tmp/routescript-presence.sqlite \\
        sip:alice@example.com examples/pres-rules.xml --mi http://127.0.0.1:8888/mi

(the database and MI address of examples/presence.cfg; run it with the interpreter routescript is
installed in).

The same by hand (SQLite; PostgreSQL takes the same statement with decode(..., 'hex') for the blob):
    DELETE FROM xcap WHERE username='alice' AND domain='example.com' AND doc_type=2;
    INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port)
      VALUES ('alice', 'example.com', readfile('examples/pres-rules.xml'), 2, 'etag-1', 1,
              '/pres-rules/users/sip:alice@example.com/index', 0);
    routescript mi refreshWatchers sip:alice@example.com presence 0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

PRES_RULES = 2  # xcap.doc_type of a pres-rules document


async def store(db_url: str, user: str, domain: str, doc: bytes) -> None:
    from routescript.db import open_database

    db = await open_database(db_url)
    try:
        await db.ensure_schema(["xcap"])
        doc_uri = f"/pres-rules/users/sip:{user}@{domain}/index"
        async with db.transaction():
            await db.delete("xcap", {"username": user, "domain": domain, "doc_type": PRES_RULES})
            await db.insert("xcap", {"username": user, "domain": domain, "doc": doc, "doc_type": PRES_RULES,
                                     "etag": f"rs-{time.time_ns():x}", "source": 1, "doc_uri": doc_uri,
                                     "port": 0})
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db_url", help="the database of the xcap table (sqlite:///... or postgres://...)")
    parser.add_argument("presentity", help="sip:user@domain whose rules these are")
    parser.add_argument("rules", type=Path, help="the pres-rules XML file")
    parser.add_argument("--mi", metavar="URL",
                        help="mi_http URL of the running server: refreshWatchers after")
    parser.add_argument("--event", default="presence")
    args = parser.parse_args(argv)

    from routescript.modules.presence_xml.rules import RulesError, parse_rules
    from routescript.sip import ParseError, parse_uri

    try:
        uri = parse_uri(args.presentity)
    except ParseError as exc:
        parser.error(f"bad presentity {args.presentity!r}: {exc.reason}")
    doc = args.rules.read_bytes()
    try:
        parse_rules(doc)   # refuse a document the server could not use
    except RulesError as exc:
        parser.error(f"{args.rules}: {exc}")
    asyncio.run(store(args.db_url, uri.user or "", uri.host, doc))
    print(f"stored {args.rules} as the pres-rules of sip:{uri.user}@{uri.host}")
    if args.mi:
        from routescript.mi.client import MIClientError, MIReplyError, call_http

        try:
            call_http(args.mi, "refreshWatchers", [f"sip:{uri.user}@{uri.host}", args.event, 0])
        except (MIClientError, MIReplyError) as exc:
            print(f"refreshWatchers failed: {exc}", file=sys.stderr)
            return 1
        print("watchers refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
