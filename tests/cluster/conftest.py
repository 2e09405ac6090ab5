"""Fixtures for the cluster tests: nodes on one fresh PostgreSQL schema or MySQL database
(tests/db/conftest.py explains the servers they need), a fake clock, and the presence tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from db.conftest import PG_URL, fresh_pg_schema, with_search_path
from db.mysql_util import fresh_mysql_db


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_pg_schema() as schema:
        yield with_search_path(PG_URL, schema)


@pytest.fixture(params=["postgres", "mysql"])
async def cluster_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The database the nodes share: a fresh PostgreSQL schema or MySQL database."""
    if request.param == "mysql":
        async with fresh_mysql_db() as url:
            yield url
    else:
        async with fresh_pg_schema() as schema:
            yield with_search_path(PG_URL, schema)


__all__ = ["FakeClock", "PG_URL"]
