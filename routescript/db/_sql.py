"""SQL text building shared by the backends.

Identifiers come only from the schema (checked here, then quoted); values never enter the SQL text, they are
bound parameters - "?" for SQLite, "$n" for PostgreSQL, "%s" for MySQL.
Values are coerced to the column's kind so every backend stores and returns the same Python types (int,
str, bytes for blobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from routescript.db.errors import DatabaseError
from routescript.db.schema import Column, Dialect, Table, quote

# where={"expires": ("<", 1700000000)}: the operators a condition may use.
OPERATORS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">=", "in", "not in"})
MAX_IN_VALUES = 1000  # bound on the list of an "in" condition (SQLite's bind limit is far above)


class Params:
    """Collects bound values and hands out placeholders in the dialect's style."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        if self.dialect == "postgres":
            return f"${len(self.values)}"
        return "?" if self.dialect == "sqlite" else "%s"


def coerce(table: Table, col: Column, value: Any) -> Any:
    """The value as the column's kind wants it; a wrong type is DatabaseError (bad query)."""
    if value is None:
        return None
    if col.kind in ("int", "id", "bigkey", "bigpk"):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
    elif col.kind == "real":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif col.kind == "datetime":
        if isinstance(value, datetime):
            return value.replace(tzinfo=None, microsecond=0)
    elif col.kind in ("str", "text"):
        if isinstance(value, str):
            return value
    else:  # blob: bytes as given; text stored as its UTF-8 bytes
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
    raise DatabaseError(f"{table.name}.{col.name} expects {col.kind}, got {type(value).__name__}")


def column(table: Table, name: Any) -> Column:
    col = table.by_name.get(name) if isinstance(name, str) else None
    if col is None:
        raise DatabaseError(f"unknown column {name!r} in table '{table.name}'")
    return col


def where_sql(table: Table, where: Mapping[str, Any] | None, params: Params) -> str:
    """' WHERE a = ? AND b < ?' (empty when there is no condition)."""
    if not where:
        return ""
    if not isinstance(where, Mapping):
        raise DatabaseError("where must be a dict of column -> value or (operator, value)")
    terms = []
    for name, cond in where.items():
        col = column(table, name)
        op, value = ("=", cond) if not isinstance(cond, tuple) else _split(cond)
        qname = quote(col.name)
        if op in ("in", "not in"):
            values = _values(value)
            if not values:  # "x IN ()" is not SQL: an empty list matches nothing (in) / everything (not in)
                terms.append("1 = 0" if op == "in" else "1 = 1")
                continue
            holders = ", ".join(params.add(coerce(table, col, v)) for v in values)
            terms.append(f"{qname} {op.upper()} ({holders})")
        elif value is None:
            if op not in ("=", "!=", "<>"):
                raise DatabaseError(f"operator {op!r} cannot compare {table.name}.{col.name} with NULL")
            terms.append(f"{qname} IS NULL" if op == "=" else f"{qname} IS NOT NULL")
        else:
            terms.append(f"{qname} {'<>' if op == '!=' else op} {params.add(coerce(table, col, value))}")
    return " WHERE " + " AND ".join(terms)


def _split(cond: tuple[Any, ...]) -> tuple[str, Any]:
    if len(cond) != 2 or not isinstance(cond[0], str) or cond[0].lower() not in OPERATORS:
        raise DatabaseError(f"bad condition {cond!r}: expected (operator, value) with operator in "
                            f"{sorted(OPERATORS)}")
    return cond[0].lower(), cond[1]


def _values(value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise DatabaseError("an 'in' condition takes a list of values")
    if len(value) > MAX_IN_VALUES:
        raise DatabaseError(f"an 'in' condition takes at most {MAX_IN_VALUES} values")
    return list(value)


def row_values(table: Table, row: Mapping[str, Any]) -> tuple[list[Column], list[Any]]:
    if not isinstance(row, Mapping) or not row:
        raise DatabaseError(f"a row for '{table.name}' must be a non-empty dict")
    cols = [column(table, name) for name in row]
    return cols, [coerce(table, c, row[c.name]) for c in cols]


def select(table: Table, name: str, dialect: Dialect, where: Mapping[str, Any] | None,
           columns: Sequence[str] | None, order_by: str | Sequence[str] | None,
           limit: int | None, params: Params | None = None) -> tuple[str, list[Any], list[Column]]:
    """SELECT text; `params` continues an outer statement's placeholders (a sub-select)."""
    cols = table.columns if columns is None else tuple(column(table, c) for c in _names(columns))
    if not cols:
        raise DatabaseError("columns must name at least one column")
    params = params or Params(dialect)
    col_list = ", ".join(quote(c.name) for c in cols)
    sql = f"SELECT {col_list} FROM {quote(name)}"  # noqa: S608 - identifiers from the schema
    sql += where_sql(table, where, params)
    if order_by:
        terms = []
        for term in _names(order_by):
            desc = term.startswith("-")
            terms.append(quote(column(table, term[1:] if desc else term).name) + (" DESC" if desc else ""))
        sql += " ORDER BY " + ", ".join(terms)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise DatabaseError(f"bad limit {limit!r}")
        sql += f" LIMIT {int(limit)}"
    return sql, params.values, list(cols)


def _names(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        return [names]
    out = list(names)
    if not all(isinstance(n, str) for n in out):
        raise DatabaseError("column names must be strings")
    return out


def insert(table: Table, name: str, dialect: Dialect, cols: Sequence[Column]) -> str:
    holders = ", ".join("?" if dialect == "sqlite" else "%s" if dialect == "mysql" else f"${i}"
                        for i in range(1, len(cols) + 1))
    col_list = ", ".join(quote(c.name) for c in cols)
    sql = f"INSERT INTO {quote(name)} ({col_list}) VALUES ({holders})"  # noqa: S608 - identifiers from the schema
    if dialect == "postgres" and table.has_id:
        sql += ' RETURNING "id"'
    return sql


def upsert(table: Table, name: str, dialect: Dialect, cols: Sequence[Column], keys: Sequence[str]) -> str:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: replace the row with the same key (OpenSIPS db replace)."""
    key_cols = [column(table, k) for k in _names(keys)]
    key_set = frozenset(c.name for c in key_cols)
    if key_set not in table.unique_keys():
        raise DatabaseError(f"upsert keys {sorted(key_set)} are not a unique key of '{table.name}' "
                            f"(unique keys: {[sorted(k) for k in table.unique_keys()]})")
    if not key_set <= {c.name for c in cols}:
        raise DatabaseError(f"upsert row for '{table.name}' must contain its keys {sorted(key_set)}")
    sql = insert(table, name, dialect, cols).removesuffix(' RETURNING "id"')
    rest = [c for c in cols if c.name not in key_set]
    if dialect == "mysql":
        # MySQL has no conflict target: ON DUPLICATE KEY UPDATE fires on any unique key of the row
        # (the same one for our tables: each has one unique key besides its auto-increment id).
        # Nothing to replace: a no-op assignment of the first key column (MySQL's INSERT IGNORE would
        # hide other errors too).
        sets = ", ".join(f"{quote(c.name)} = VALUES({quote(c.name)})" for c in (rest or key_cols[:1]))
        return f"{sql} ON DUPLICATE KEY UPDATE {sets}"
    target = ", ".join(quote(c.name) for c in key_cols)
    if rest:
        sets = ", ".join(f"{quote(c.name)} = excluded.{quote(c.name)}" for c in rest)
        return f"{sql} ON CONFLICT ({target}) DO UPDATE SET {sets}"
    return f"{sql} ON CONFLICT ({target}) DO NOTHING"


def update(table: Table, name: str, dialect: Dialect, where: Mapping[str, Any],
           values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    cols, vals = row_values(table, values)
    params = Params(dialect)
    sets = ", ".join(f"{quote(c.name)} = {params.add(v)}" for c, v in zip(cols, vals, strict=True))
    sql = f"UPDATE {quote(name)} SET {sets}"  # noqa: S608 - identifiers from the schema
    sql += where_sql(table, _where(where), params)
    return sql, params.values


def delete(table: Table, name: str, dialect: Dialect, where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    params = Params(dialect)
    sql = f"DELETE FROM {quote(name)}"  # noqa: S608 - identifiers from the schema
    return sql + where_sql(table, _where(where), params), params.values


def count(table: Table, name: str, dialect: Dialect,
          where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    params = Params(dialect)
    sql = f"SELECT COUNT(*) FROM {quote(name)}"  # noqa: S608 - identifiers from the schema
    return sql + where_sql(table, where, params), params.values


def claim(table: Table, name: str, dialect: Dialect, where: Mapping[str, Any],
          values: Mapping[str, Any] | None, limit: int | None,
          order_by: str | Sequence[str] | None) -> tuple[str, list[Any], list[Column]]:
    """UPDATE (values given) or DELETE of the rows a locking sub-select picks, RETURNING every column.

    PostgreSQL: `... WHERE key IN (SELECT key ... LIMIT n FOR UPDATE SKIP LOCKED)`: rows locked by a
    concurrent claimer are skipped instead of waited for, and the ones we got stay locked until our
    transaction ends. SQLite has one writer at a time, so the same statement without the locking
    clause is already exclusive. The key is `id` when the table has one, else ctid / rowid."""
    params = Params(dialect)
    head = f"DELETE FROM {quote(name)}"  # noqa: S608 - identifiers from the schema
    if values is not None:
        cols, vals = row_values(table, values)
        sets = ", ".join(f"{quote(c.name)} = {params.add(v)}" for c, v in zip(cols, vals, strict=True))
        head = f"UPDATE {quote(name)} SET {sets}"  # noqa: S608 - identifiers from the schema
    key = quote("id") if table.has_id else ("ctid" if dialect == "postgres" else "rowid")
    inner, _, _ = select(table, name, dialect, _where(where), None, order_by, limit, params)
    inner = f"SELECT {key} FROM" + inner.split(" FROM", 1)[1]  # the key instead of the column list
    if dialect == "postgres":
        inner += " FOR UPDATE SKIP LOCKED"
    returning = ", ".join(quote(c.name) for c in table.columns)
    return f"{head} WHERE {key} IN ({inner}) RETURNING {returning}", params.values, list(table.columns)


def _where(where: Any) -> Mapping[str, Any]:
    # update/delete require an explicit where; {} means "every row", None is refused as a likely mistake.
    if not isinstance(where, Mapping):
        raise DatabaseError("where must be a dict ({} to touch every row)")
    return where
