"""The storage back ends the presence suites run on: one behaviour suite, parametrised over SQLite and
PostgreSQL (docs/STYLE: "parametrise one behaviour suite over back ends").

    async def test_x(presence_db: TestDb) -> None:      # runs thrice: [sqlite], [postgres] and [mysql]
        cfg = presence_cfg(tmp_path, port, db_url=presence_db.url)
        ...
        assert presence_db.count("presentity") == 1
        rows = presence_db.rows("SELECT etag FROM presentity WHERE username = ?", "ann")

SQLite: a file under the test's tmp dir. PostgreSQL: 127.0.0.1:5432, database `test` (trust auth), each
TestDb in a fresh schema of its own (the URL selects it with `?options=-csearch_path%3D<schema>`), dropped
afterwards. PostgreSQL must be running: a test that needs it fails (never skips). Override the server with
ROUTESCRIPT_TEST_PG=postgres://user@host:port/db; run one back end only with
ROUTESCRIPT_TEST_BACKENDS=sqlite (or postgres, or mysql). MySQL/MariaDB: 127.0.0.1:3306, user root, each
TestDb in a database of its own, dropped afterwards (tests/db/mysql_util.py; they skip, saying why, when
the server does not answer - CI starts it).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

PG_URL = os.environ.get("ROUTESCRIPT_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("ROUTESCRIPT_TEST_BACKENDS", "sqlite,postgres,mysql").split(",")
            if b.strip()]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even when the calling thread runs an event
    loop already (a sync helper called from an async test): in a thread of its own, bounded."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(asyncio.wait_for(coro, 30))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(40)
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise TimeoutError("database helper did not finish")
    return box["result"]  # type: ignore[no-any-return]


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


_QMARK = re.compile(r"\?")


class TestDb:
    """One test database: `url` for db_url, and plain SQL against it as another program would run it
    (placeholders are `?` for both back ends)."""

    __test__ = False   # not a test class

    def __init__(self, backend: str, url: str, *, path: Path | None = None,
                 schema: str | None = None) -> None:
        self.backend = backend
        self.url = url
        self.path = path
        self.schema = schema

    @classmethod
    def create(cls, backend: str, tmp_path: Path, name: str = "presence.sqlite") -> TestDb:
        if backend == "sqlite":
            path = tmp_path / name
            return cls("sqlite", f"sqlite://{path}", path=path)
        if backend == "mysql":
            from db.mysql_util import create_database
            return cls("mysql", run_sync(create_database()))
        if backend != "postgres":
            raise ValueError(f"unknown back end {backend!r}")
        schema = "rs_test_" + uuid.uuid4().hex[:16]
        run_sync(_pg_admin(f"CREATE SCHEMA {schema}"))
        return cls("postgres", with_search_path(PG_URL, schema), schema=schema)

    def drop(self) -> None:
        if self.backend == "mysql":
            from db.mysql_util import drop_database
            run_sync(drop_database(self.url))
        if self.schema is not None:
            run_sync(_pg_admin(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))

    # --- plain SQL ------------------------------------------------------------------------------------
    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=5) as con:  # type: ignore[arg-type]
                return [tuple(r) for r in con.execute(sql, params).fetchall()]
        if self.backend == "mysql":
            from db.mysql_util import mysql_rows
            return run_sync(mysql_rows(self.url, sql.replace("?", "%s"), params))
        return run_sync(self._pg(self._numbered(sql), params, fetch=True))

    def execute(self, sql: str, *params: Any) -> None:
        if self.backend == "sqlite":
            with sqlite3.connect(self.path, timeout=5) as con:  # type: ignore[arg-type]
                con.execute(sql, params)
            return
        if self.backend == "mysql":
            from db.mysql_util import mysql_rows
            run_sync(mysql_rows(self.url, sql.replace("?", "%s"), params))
            return
        run_sync(self._pg(self._numbered(sql), params, fetch=False))

    def count(self, table: str, where: str = "") -> int:
        return int(self.rows(f"SELECT COUNT(*) FROM {table} {where}")[0][0])  # noqa: S608 - test's own names

    def tables(self) -> set[str]:
        if self.backend == "sqlite":
            return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if self.backend == "mysql":
            return {r[0] for r in self.rows("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = DATABASE()")}
        return {r[0] for r in self.rows("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = current_schema()")}

    @staticmethod
    def _numbered(sql: str) -> str:
        counter = iter(range(1, 1000))
        return _QMARK.sub(lambda _m: f"${next(counter)}", sql)

    async def _pg(self, sql: str, params: tuple[Any, ...], *, fetch: bool) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            if fetch:
                return [tuple(r) for r in await conn.fetch(sql, *params)]
            await conn.execute(sql, *params)
            return []
        finally:
            await conn.close()

    def __repr__(self) -> str:
        return f"TestDb({self.backend}, {self.url})"


async def _pg_admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:  # not a skip: CI has PostgreSQL, a missing server is a failure
        raise RuntimeError(f"PostgreSQL not reachable at {PG_URL} ({exc}); start it or set "
                           "ROUTESCRIPT_TEST_PG, or run with ROUTESCRIPT_TEST_BACKENDS=sqlite") from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """"sqlite", "postgres" or "mysql": a test (or a module fixture) using it runs once per back end."""
    return str(request.param)


@pytest.fixture
def presence_db(backend: str, tmp_path: Path) -> Iterator[TestDb]:
    """A fresh, empty database of the back end, dropped after the test."""
    db = TestDb.create(backend, tmp_path)
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture
def db_url(presence_db: TestDb) -> str:
    """presence_db's URL, for a test that opens the database itself (a module's db_url, open_database)."""
    return presence_db.url


@pytest.fixture(scope="module")
def module_presence_db(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDb]:
    """The same, shared by the tests of one module (for a server started once per module)."""
    db = TestDb.create(backend, tmp_path_factory.mktemp("db"))
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="module")
def presence_dbs(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], TestDb]]:
    """A maker of fresh databases of the back end (for a module starting several servers), all dropped
    when the module's tests are done."""
    made: list[TestDb] = []

    def make() -> TestDb:
        db = TestDb.create(backend, tmp_path_factory.mktemp("db"))
        made.append(db)
        return db

    try:
        yield make
    finally:
        for db in made:
            db.drop()


LEFT_THREAD_GRACE = 2.0   # seconds a test's threads get to finish after it


@pytest.fixture(autouse=True)
def no_thread_left_running() -> Iterator[None]:
    """A test must not leave a non-daemon thread running: the interpreter waits for every such thread at
    exit, so one left behind (aiosqlite >= 0.22 runs each connection in a non-daemon thread until it is
    closed) made pytest print its summary and then hang until CI's time ran out. Failing the test that
    left it names the culprit."""
    before = {t.ident for t in threading.enumerate()}
    yield
    left = [t for t in threading.enumerate()
            if t.ident not in before and not t.daemon and t is not threading.current_thread()]
    for thread in left:
        thread.join(LEFT_THREAD_GRACE / len(left))
    still = [t.name for t in left if t.is_alive()]
    assert not still, f"the test left non-daemon threads running (an unclosed database?): {still}"
