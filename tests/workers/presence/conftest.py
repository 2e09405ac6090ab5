"""The `workers` fixture: presence worker nodes on one SQLite file, all stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .worker_nodes import Workers, workers_on


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    async with workers_on(f"sqlite://{tmp_path}/presence.sqlite") as ws:
        yield ws
