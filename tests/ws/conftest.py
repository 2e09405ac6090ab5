"""The ws tests' fixtures: the transport tests' stub core (tests/transport/conftest.py), loaded under a
name of its own (two conftest modules cannot both be imported as `conftest`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "transport" / "conftest.py"
_spec = importlib.util.spec_from_file_location("transport_conftest", _path)
assert _spec is not None and _spec.loader is not None
transport_conftest = importlib.util.module_from_spec(_spec)
sys.modules["transport_conftest"] = transport_conftest
_spec.loader.exec_module(transport_conftest)

StubCore = transport_conftest.StubCore
wait_logged = transport_conftest.wait_logged
no_tracebacks = transport_conftest.no_tracebacks
