"""The `location` table as OpenSIPS 3.4 creates it (scripts/{sqlite,postgres}/usrloc-create.sql, version
1013) is opened here unchanged, and rows written here read back as OpenSIPS's columns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from db.opensips_db import opensips_database
from db.opensips_sql import MYSQL as OPENSIPS_MYSQL
from db.opensips_sql import POSTGRES, SQLITE

from routescript.db import open_database
from routescript.db.schema import LOCATION, SCHEMA, create_table_sql
from routescript.modules.usrloc.core import Contact


VERSION = {
    "sqlite": "CREATE TABLE version (table_name CHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL, "
              "CONSTRAINT version_t_name_idx UNIQUE (table_name));",
    "postgres": "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 "
                "NOT NULL, CONSTRAINT version_t_name_idx UNIQUE (table_name));",
}



def _location_part(script: str) -> str:
    """OpenSIPS's usrloc-create.sql as it stands inside tests/db/opensips_sql.py's whole-database script:
    the version row and the CREATE TABLE."""
    start = script.index("INSERT INTO version (table_name, table_version) values ('location'")
    end = script.index("\n);", start) + len("\n);")
    return script[start:end] + "\n"


OPENSIPS_SQLITE = _location_part(SQLITE)       # OpenSIPS 3.4 scripts/sqlite/usrloc-create.sql
OPENSIPS_POSTGRES = _location_part(POSTGRES)   # OpenSIPS 3.4 scripts/postgres/usrloc-create.sql


def columns_of(sql: str) -> list[str]:
    body = sql.split("CREATE TABLE location (", 1)[1].rsplit(")", 1)[0]
    return [line.strip().split()[0].strip('"') for line in body.strip().splitlines()]


def test_schema_matches_opensips_columns_and_version() -> None:
    assert SCHEMA["location"] is LOCATION and LOCATION.version == 1013
    assert list(LOCATION.column_names) == columns_of(OPENSIPS_SQLITE) == columns_of(OPENSIPS_POSTGRES)
    ours = create_table_sql(LOCATION, "postgres")[0]
    for raw in OPENSIPS_POSTGRES.split("CREATE TABLE location (", 1)[1].splitlines():
        line = raw.strip().rstrip(",")
        if line and not line.startswith(")"):
            name, rest = line.split(" ", 1)
            assert f'"{name}" {rest}' in ours, line


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def opensips_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """OpenSIPS 3.4's scripts (mysql: standard + presence + usrloc; the others: version + usrloc)."""
    script = {"sqlite": VERSION["sqlite"] + OPENSIPS_SQLITE,
              "postgres": VERSION["postgres"] + OPENSIPS_POSTGRES, "mysql": OPENSIPS_MYSQL}[request.param]
    async with opensips_database(request.param, tmp_path, script) as url:
        yield url


@pytest.mark.asyncio
async def test_an_opensips_location_table_is_used_as_it_is(opensips_db: str) -> None:
    c = Contact(contact_id=(123 << 32) | 456, username="bob", domain=None, contact="sip:bob@10.0.0.8:5060",
                expires=1_900_000_000, q=0.5, callid="abc", cseq=7, cflags=0, user_agent="phone",
                socket="udp:127.0.0.1:5060", methods=257, last_modified=1_800_000_000)
    async with await open_database(opensips_db) as db:
        await db.ensure_schema(["location"])          # accepted: version 1013, every column there
        await db.upsert("location", c.to_row(), ["contact_id"])
        # a row as OpenSIPS would have written it, with the defaults
        await db.insert("location", {"contact_id": 99, "username": "alice", "contact": "sip:a@h",
                                     "expires": 0})
        rows = {r["contact_id"]: r for r in await db.query("location")}
    assert Contact.from_row(rows[c.contact_id]) == c
    alice = Contact.from_row(rows[99])
    assert alice.q == 1.0 and alice.callid == "Default-Call-ID" and alice.cseq == 13
    assert alice.last_modified == 0 and alice.expires == 0
