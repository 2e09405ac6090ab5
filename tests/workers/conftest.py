"""The dispatcher's async tests run on asyncio's loop and on uvloop (the core's choice), as the
transport's do: the inbox reader uses the loop's add_reader."""

from __future__ import annotations

import asyncio
from typing import Any


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
