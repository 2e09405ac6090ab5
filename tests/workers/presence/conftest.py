"""The `workers` fixture: presence worker nodes on one SQLite file, all stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .worker_nodes import Workers


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    ws = Workers(f"sqlite://{tmp_path}/presence.sqlite")
    try:
        yield ws
    finally:
        await ws.close()
