"""Typed statement plans: the SQL of one write or query shape, built once, and the binding of its values.

A write shape is (operation, table, the columns it sets, the columns its equality conditions match); a
query shape is (table, the columns its equality conditions match, the columns read, order, limit). Its
plan keeps the SQL text and, per bound column, the one Python type the column takes as it is (int for
int/id columns, str for str/text, bytes for blob). Binding tests `type(value) is kind` inline and calls
`_sql.coerce` only for the odd value (None in a condition, bool, bytearray, str into a blob, an int
subclass, a wrong type), so the same values are bound - and the same DatabaseError raised - as by the
unplanned path, at one Python call per write instead of one or two per value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from routescript.db import _sql
from routescript.db.schema import Column, ColumnKind, Table

# The type a column kind binds without conversion (everything else goes through _sql.coerce).
EXACT_TYPE: dict[ColumnKind, type] = {"id": int, "int": int, "str": str, "text": str, "blob": bytes,
                                      "bigkey": int, "bigpk": int, "real": float, "datetime": datetime}


class NotPlain(Exception):
    """A condition value the plan cannot bind (None is IS NULL, a tuple an operator): build the SQL."""


class StatementPlan:
    """The SQL of one statement shape and the columns (with their exact types) its parameters bind, in
    order; for a query also the columns its rows hold."""

    __slots__ = ("result_cols", "sql", "table", "value_cols", "value_types", "where_cols", "where_types")

    def __init__(self, sql: str, table: Table, value_cols: tuple[Column, ...],
                 where_cols: tuple[Column, ...], result_cols: tuple[Column, ...] = ()) -> None:
        self.sql = sql
        self.table = table
        self.result_cols = result_cols
        self.value_cols = value_cols
        self.value_types = tuple(EXACT_TYPE[c.kind] for c in value_cols)
        self.where_cols = where_cols
        self.where_types = tuple(EXACT_TYPE[c.kind] for c in where_cols)

    def bind(self, values: Mapping[str, Any], where: Mapping[str, Any] | None) -> list[Any]:
        """The parameters of a write of this shape: `values` (in the plan's column order, as the shape's
        key guarantees), then the `where` values. Raises NotPlain for a condition that is not an equality
        with a value, DatabaseError for a value of the wrong type."""
        params = [v if type(v) is k or v is None else self._odd(c, v)
                  for c, k, v in zip(self.value_cols, self.value_types, values.values(), strict=True)
                  ] if self.value_cols else []
        if self.where_cols:
            assert where is not None   # a shape with condition columns was planned from a where
            params += [v if type(v) is k else self._odd_condition(c, v)
                       for c, k, v in zip(self.where_cols, self.where_types, where.values(), strict=True)]
        return params

    def _odd(self, col: Column, value: Any) -> Any:
        return _sql.coerce(self.table, col, value)

    def _odd_condition(self, col: Column, value: Any) -> Any:
        if value is None or isinstance(value, tuple):
            raise NotPlain
        return _sql.coerce(self.table, col, value)
