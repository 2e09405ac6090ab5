"""The one error type of the storage layer.

Callers answer by `kind`: a transient failure (the database is unreachable, busy or restarting) is a 503 with
Retry-After - try again later; anything else is our fault or the data's (500) and retrying will not help.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["connection", "constraint", "query", "schema", "config"]


class DatabaseError(Exception):
    """A storage failure.

    kind:
      "connection" - connection lost/refused, database busy or locked, server shutting down: retry later
                     (`transient` is True only for this kind);
      "constraint" - a unique/NOT NULL constraint refused the row;
      "query"      - a bad query: unknown table/column, wrong value type, SQL error;
      "schema"     - the tables are missing or have a version routescript does not handle
                     (the message says what to run);
      "config"     - a malformed database URL.
    """

    def __init__(self, message: str, kind: ErrorKind = "query") -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later (answer 503, not 500)."""
        return self.kind == "connection"

    def __repr__(self) -> str:
        return f"DatabaseError({self.message!r}, kind={self.kind!r})"


class SchemaError(DatabaseError):
    """The database holds a table whose version or columns do not match; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "schema")
