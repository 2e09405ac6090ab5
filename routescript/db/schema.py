"""The OpenSIPS 3.4 tables routescript uses, written once as data; DDL for both dialects is generated from it.

Names, types, defaults, unique keys and table versions are those of OpenSIPS 3.4 (db/schema/*.xml, from
which OpenSIPS generates scripts/{sqlite,postgres}/standard-create.sql and presence-create.sql), so a
database created by OpenSIPS is used as it is, and one created here works with OpenSIPS.

Column kinds and how each dialect spells them (as OpenSIPS's generated scripts do):
    int     INTEGER          INTEGER
    str(n)  CHAR(n)          VARCHAR(n)      (SQLite ignores the length; values are never truncated)
    text    TEXT             TEXT
    blob    BLOB             BYTEA           (always returned as bytes)
    id      INTEGER PRIMARY KEY AUTOINCREMENT / SERIAL PRIMARY KEY (sequence capped at 2^31-1, CYCLE)
    bigkey  INTEGER PRIMARY KEY AUTOINCREMENT / BIGSERIAL PRIMARY KEY (location.contact_id: usrloc
            writes its own 64-bit ids, as OpenSIPS does)
    bigpk   BIGINT(10) PRIMARY KEY / BIGINT PRIMARY KEY (dialog.dlg_id: the dialog module's own 64-bit
            id, no sequence)
    real    FLOAT(10,2)      REAL            (location.q; a Python float)
    datetime DATETIME        TIMESTAMP WITHOUT TIME ZONE   (location.last_modified; a naive UTC
            datetime.datetime in Python; SQLite stores its 'YYYY-MM-DD HH:MM:SS' text)

MySQL/MariaDB, as OpenSIPS's scripts/mysql/*-create.sql spell them: int INT(11) (INT(10) UNSIGNED where
`unsigned`), str CHAR(n), text TEXT, blob BLOB (LONGBLOB for xcap.doc), id INT(10) UNSIGNED AUTO_INCREMENT
PRIMARY KEY, bigkey BIGINT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY, real FLOAT(10,2), datetime DATETIME;
every table ENGINE=InnoDB; unique constraints and indexes named without the table prefix (MySQL names
them per table). Identifiers stay double-quoted: the MySQL back end runs its sessions with ANSI_QUOTES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ColumnKind = Literal["id", "int", "str", "text", "blob", "bigkey", "bigpk", "real", "datetime"]
Dialect = Literal["sqlite", "postgres", "mysql"]

# An identifier we are willing to put in SQL text (table names given by the user through `table_names`).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    size: int | None = None           # for "str"
    nullable: bool = False
    default: int | float | str | None = None  # SQL DEFAULT
    null_default: bool = False        # written "DEFAULT NULL" (as OpenSIPS does for some nullable columns)
    unsigned: bool = False            # MySQL: INT UNSIGNED (version.table_version, location.expires)
    mysql_width: int | None = None    # MySQL: INT(n) other than 11 / 10 UNSIGNED (acc: INT(11) UNSIGNED)


@dataclass(frozen=True, slots=True)
class Table:
    """One table: `version` is the row OpenSIPS keeps for it in the `version` table."""

    name: str
    version: int
    columns: tuple[Column, ...]
    unique: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (constraint suffix, columns)
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (index suffix, columns)
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def has_id(self) -> bool:
        return "id" in self.by_name and self.by_name["id"].kind == "id"

    def unique_keys(self) -> list[frozenset[str]]:
        """Column sets that identify a row (the primary key and each UNIQUE constraint)."""
        keys = [frozenset(cols) for _, cols in self.unique]
        if self.has_id:
            keys.append(frozenset(("id",)))
        keys.extend(frozenset((c.name,)) for c in self.columns if c.kind in ("bigkey", "bigpk"))
        return keys


LONG = 2**32 - 1   # a blob's size: MySQL LONGBLOB (xcap.doc) instead of BLOB (64 KiB)


def _id() -> Column:
    return Column("id", "id")


def _s(name: str, size: int, nullable: bool = False, default: str | None = None,
       null_default: bool = False) -> Column:
    return Column(name, "str", size, nullable or null_default, default, null_default)


def _blob(name: str, nullable: bool = False) -> Column:
    return Column(name, "blob", None, nullable, None, null_default=nullable)


def _i(name: str, nullable: bool = False, default: int | None = None) -> Column:
    return Column(name, "int", None, nullable, default)


VERSION = Table(
    "version", 1,
    (_s("table_name", 32), Column("table_version", "int", default=0, unsigned=True)),
    unique=(("t_name_idx", ("table_name",)),),
)

PRESENTITY = Table(
    "presentity", 5,
    (_id(), _s("username", 64), _s("domain", 64), _s("event", 64), _s("etag", 64), _i("expires"),
     _i("received_time"), _blob("body", nullable=True), _blob("extra_hdrs", nullable=True),
     _s("sender", 255, null_default=True)),
    unique=(("presentity_idx", ("username", "domain", "event", "etag")),),
)

ACTIVE_WATCHERS = Table(
    "active_watchers", 12,
    (_id(), _s("presentity_uri", 255), _s("watcher_username", 64), _s("watcher_domain", 64),
     _s("to_user", 64), _s("to_domain", 64), _s("event", 64, default="presence"),
     _s("event_id", 64, nullable=True), _s("to_tag", 64), _s("from_tag", 64), _s("callid", 64),
     _i("local_cseq"), _i("remote_cseq"), _s("contact", 255), Column("record_route", "text", nullable=True),
     _i("expires"), _i("status", default=2), _s("reason", 64, nullable=True), _i("version", default=0),
     _s("socket_info", 64), _s("local_contact", 255), _s("sharing_tag", 32, null_default=True)),
    unique=(("active_watchers_idx", ("presentity_uri", "callid", "to_tag", "from_tag")),),
)

WATCHERS = Table(
    "watchers", 4,
    (_id(), _s("presentity_uri", 255), _s("watcher_username", 64), _s("watcher_domain", 64),
     _s("event", 64, default="presence"), _i("status"), _s("reason", 64, nullable=True), _i("inserted_time")),
    unique=(("watcher_idx", ("presentity_uri", "watcher_username", "watcher_domain", "event")),),
)

XCAP = Table(
    "xcap", 4,
    (_id(), _s("username", 64), _s("domain", 64), Column("doc", "blob", LONG), _i("doc_type"), _s("etag", 64),
     _i("source"), _s("doc_uri", 255), _i("port")),
    unique=(("account_doc_type_idx", ("username", "domain", "doc_type", "doc_uri")),),
    indexes=(("source_idx", ("source",)),),
)

PUA = Table(
    "pua", 8,
    (_id(), _s("pres_uri", 255), _s("pres_id", 255), _i("event"), _i("expires"), _i("desired_expires"),
     _i("flag"), _s("etag", 64, nullable=True), _s("tuple_id", 64, nullable=True),
     _s("watcher_uri", 255, nullable=True), _s("to_uri", 255, nullable=True),
     _s("call_id", 64, nullable=True),
     _s("to_tag", 64, nullable=True), _s("from_tag", 64, nullable=True), _i("cseq", nullable=True),
     Column("record_route", "text", nullable=True), _s("contact", 255, nullable=True),
     _s("remote_contact", 255, nullable=True), _i("version", nullable=True),
     Column("extra_headers", "text", nullable=True)),
    indexes=(("del1_idx", ("pres_uri", "event")), ("del2_idx", ("expires",)),
             ("update_idx", ("pres_uri", "pres_id", "flag", "event"))),
)

# usrloc's table (OpenSIPS 3.4 scripts/*/usrloc-create.sql, version 1013). contact_id is computed by usrloc
# (never by the sequence), so every worker and node can name a binding before it is written.
LOCATION = Table(
    "location", 1013,
    (Column("contact_id", "bigkey"), _s("username", 64, default=""), _s("domain", 64, null_default=True),
     Column("contact", "text"), _s("received", 255, null_default=True), _s("path", 255, null_default=True),
     Column("expires", "int", unsigned=True), Column("q", "real", default=1.0),
     _s("callid", 255, default="Default-Call-ID"),
     _i("cseq", default=13), Column("last_modified", "datetime", default="1900-01-01 00:00:01"),
     _i("flags", default=0), _s("cflags", 255, null_default=True), _s("user_agent", 255, default=""),
     _s("socket", 64, null_default=True), Column("methods", "int", nullable=True, null_default=True),
     _s("sip_instance", 255, null_default=True),
     Column("kv_store", "text", 512, nullable=True, null_default=True),
     _s("attr", 255, null_default=True)),
)

# Ours, not OpenSIPS's: one row per node of a presence cluster (modules/presence/cluster.py, docs/cluster.md).
# Created only when clustering is configured. node_id is the node's sharing tag, the value its
# subscriptions carry in active_watchers.sharing_tag (hence the same size). `beat` changes at every
# heartbeat (observers time its changes on their own clocks, so clock skew between machines does not
# matter); `last_seen` is the node's wall clock, for people reading the table. state: active | dead
# (taken over by `adopted_by`).
RS_NODES = Table(
    "rs_nodes", 1,
    (_id(), _i("cluster_id"), _s("node_id", 32), _s("state", 16, default="active"), _i("beat", default=0),
     _i("last_seen", default=0), _i("started", default=0), _s("adopted_by", 32, null_default=True)),
    unique=(("node_idx", ("cluster_id", "node_id")),),
)

# auth_db's (OpenSIPS 3.4 scripts/*/auth_db-create.sql, version 8: the RFC 8760 hash columns). Created by
# auth_db's start() or `routescript db subscriber`, never by default.
SUBSCRIBER = Table(
    "subscriber", 8,
    (_id(), _s("username", 64, default=""), _s("domain", 64, default=""), _s("password", 25, default=""),
     _s("email_address", 64, default=""), _s("ha1", 64, default=""), _s("ha1_sha256", 64, default=""),
     _s("ha1_sha512t256", 64, default=""), _s("rpid", 64, null_default=True)),
    unique=(("account_idx", ("username", "domain")),),
    indexes=(("username_idx", ("username",)),),
)

# dialog's (OpenSIPS 3.4 scripts/*/dialog-create.sql, version 12). Created by the dialog module's start()
# when db_mode is not 0, or by `routescript db init` when asked for it by name.
DIALOG = Table(
    "dialog", 12,
    (Column("dlg_id", "bigpk"), _s("callid", 255), _s("from_uri", 255), _s("from_tag", 64), _s("to_uri", 255),
     _s("to_tag", 64), _s("mangled_from_uri", 255, null_default=True),
     _s("mangled_to_uri", 255, null_default=True), _s("caller_cseq", 11), _s("callee_cseq", 11),
     _i("caller_ping_cseq"), _i("callee_ping_cseq"), Column("caller_route_set", "text", 512, nullable=True),
     Column("callee_route_set", "text", 512, nullable=True), _s("caller_contact", 255, nullable=True),
     _s("callee_contact", 255, nullable=True), _s("caller_sock", 64), _s("callee_sock", 64), _i("state"),
     _i("start_time"), _i("timeout"), Column("vars", "blob", 4096, nullable=True, null_default=True),
     Column("profiles", "text", 512, nullable=True, null_default=True),
     _s("script_flags", 255, null_default=True),
     _i("module_flags", default=0), _i("flags", default=0), _s("rt_on_answer", 64, null_default=True),
     _s("rt_on_timeout", 64, null_default=True), _s("rt_on_hangup", 64, null_default=True)),
)

# acc's (OpenSIPS 3.4 scripts/*/acc-create.sql: acc version 7, missed_calls version 5). Created by the acc
# module's start() when db_url is set, or by `routescript db init` when asked for them by name. `time` and
# `created` are DATETIME (naive UTC datetimes here, as location.last_modified); extra_fields columns are
# the operator's own, added to a module's handle with Database.declare_table.
def _acc_uint(name: str) -> Column:
    return Column(name, "int", default=0, unsigned=True, mysql_width=11)


_ACC_CORE = (_id(), _s("method", 16, default=""), _s("from_tag", 64, default=""),
             _s("to_tag", 64, default=""), _s("callid", 64, default=""), _s("sip_code", 3, default=""),
             _s("sip_reason", 32, default=""),
             Column("time", "datetime"))
_CREATED = Column("created", "datetime", nullable=True, null_default=True)

ACC = Table(
    "acc", 7,
    (*_ACC_CORE, _acc_uint("duration"), _acc_uint("ms_duration"), _acc_uint("setuptime"), _CREATED),
    indexes=(("callid_idx", ("callid",)),),
)

MISSED_CALLS = Table(
    "missed_calls", 5,
    (*_ACC_CORE, _acc_uint("setuptime"), _CREATED),
    indexes=(("callid_idx", ("callid",)),),
)

# Every table routescript knows, by its OpenSIPS name. `version` is the bookkeeping table itself.
SCHEMA: dict[str, Table] = {t.name: t for t in (VERSION, PRESENTITY, ACTIVE_WATCHERS, WATCHERS, XCAP, PUA,
                                                RS_NODES, LOCATION, SUBSCRIBER, DIALOG, ACC,
                                                MISSED_CALLS)}

# The tables ensure_schema()/init_schema() handle when not told otherwise: those the presence server
# uses. `pua` (client side, used by later features) is left out so an old pua table in an existing
# OpenSIPS database never stops the start; ask for it by name. `rs_nodes` likewise (clustering only).
DEFAULT_TABLES: tuple[str, ...] = ("presentity", "active_watchers", "watchers", "xcap")


def quote(name: str) -> str:
    """Quote an identifier. Only names from SCHEMA or checked against IDENTIFIER ever get here."""
    return f'"{name}"'


def column_sql(col: Column, dialect: Dialect) -> str:
    if dialect == "mysql":
        return _mysql_column_sql(col)
    if col.kind in ("id", "bigkey"):
        serial = "SERIAL" if col.kind == "id" else "BIGSERIAL"
        return (f"{quote(col.name)} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL" if dialect == "sqlite"
                else f"{quote(col.name)} {serial} PRIMARY KEY NOT NULL")
    if col.kind == "bigpk":
        return f"{quote(col.name)} {'BIGINT(10)' if dialect == 'sqlite' else 'BIGINT'} PRIMARY KEY NOT NULL"
    if col.kind == "str":
        sql_type = f"{'CHAR' if dialect == 'sqlite' else 'VARCHAR'}({col.size})"
    elif col.kind == "int":
        sql_type = "INTEGER"
    elif col.kind == "text":
        # OpenSIPS's SQLite script spells location.kv_store TEXT(512)
        sql_type = f"TEXT({col.size})" if col.size and dialect == "sqlite" else "TEXT"
    elif col.kind == "real":
        sql_type = "FLOAT(10,2)" if dialect == "sqlite" else "REAL"
    elif col.kind == "datetime":
        sql_type = "DATETIME" if dialect == "sqlite" else "TIMESTAMP WITHOUT TIME ZONE"
    else:   # OpenSIPS's SQLite script spells dialog.vars BLOB(4096)
        sized = col.size and col.size != LONG   # LONG only says "LONGBLOB" to MySQL
        sql_type = (f"BLOB({col.size})" if sized else "BLOB") if dialect == "sqlite" else "BYTEA"
    return _with_default(col, sql_type)


def _mysql_column_sql(col: Column) -> str:
    if col.kind in ("id", "bigkey"):
        kind = "INT" if col.kind == "id" else "BIGINT"
        return f"{quote(col.name)} {kind}(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL"
    if col.kind == "bigpk":   # dialog.dlg_id: the module's own 64-bit id, no AUTO_INCREMENT
        return f"{quote(col.name)} BIGINT(10) UNSIGNED PRIMARY KEY NOT NULL"
    blob = "LONGBLOB" if col.size == LONG else f"BLOB({col.size})" if col.size else "BLOB"
    width = col.mysql_width or (10 if col.unsigned else 11)
    sql_type = {"str": f"CHAR({col.size})", "int": f"INT({width})" + (" UNSIGNED" if col.unsigned else ""),
                "text": f"TEXT({col.size})" if col.size else "TEXT",
                "blob": blob, "real": "FLOAT(10,2)", "datetime": "DATETIME"}[col.kind]
    return _with_default(col, sql_type)


def _with_default(col: Column, sql_type: str) -> str:
    parts = [quote(col.name), sql_type]
    if col.default is not None:
        if isinstance(col.default, (int, float)):
            parts.append(f"DEFAULT {col.default}")
        else:
            parts.append("DEFAULT '" + col.default.replace("'", "''") + "'")
    elif col.null_default:
        parts.append("DEFAULT NULL")
    if not col.nullable:
        parts.append("NOT NULL")
    return " ".join(parts)


def create_table_sql(table: Table, dialect: Dialect, name: str | None = None) -> list[str]:
    """CREATE TABLE (+ sequence cap and indexes) for `table`, created under `name` (default table.name)."""
    name = name or table.name
    # MySQL names constraints and indexes per table, and OpenSIPS's MySQL scripts use the bare suffix
    prefix = "" if dialect == "mysql" else name + "_"
    body = [column_sql(c, dialect) for c in table.columns]
    for suffix, cols in table.unique:
        body.append(f"CONSTRAINT {quote(prefix + suffix)} UNIQUE ({', '.join(map(quote, cols))})")
    tail = " ENGINE=InnoDB" if dialect == "mysql" else ""
    stmts = [f"CREATE TABLE {quote(name)} (\n    " + ",\n    ".join(body) + "\n)" + tail]
    if dialect == "postgres":
        # OpenSIPS keeps ids in a C int: the sequence wraps instead of overflowing (its generated
        # scripts cap every serial column's sequence, location.contact_id's too; usrloc never uses it).
        for col in table.columns:
            if col.kind in ("id", "bigkey"):
                seq = quote(f"{name}_{col.name}_seq")
                stmts.append(f"ALTER SEQUENCE {seq} MAXVALUE 2147483647 CYCLE")
    for suffix, cols in table.indexes:
        stmts.append(f"CREATE INDEX {quote(prefix + suffix)} ON {quote(name)} "
                     f"({', '.join(map(quote, cols))})")
    return stmts


def add_column_sql(table_name: str, col: Column, dialect: Dialect) -> str:
    """ALTER TABLE ... ADD COLUMN, used to upgrade an older table in place (data kept)."""
    return f"ALTER TABLE {quote(table_name)} ADD COLUMN {column_sql(col, dialect)}"
