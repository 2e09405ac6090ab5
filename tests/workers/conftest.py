"""The dispatcher's async tests run on asyncio's loop and on uvloop (the core's choice), as the
transport's do: the inbox reader uses the loop's add_reader. The end-to-end tests (a `routescript run`
subprocess) run their clients on one loop."""

from __future__ import annotations

import asyncio
from typing import Any


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    if item.path.name.endswith("_e2e.py"):   # the server runs in its own processes: one loop for the client
        return factories
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
