"""tests/ and tests/e2e on the path: the storage fixtures (db.conftest) and the e2e runner (rs_e2e)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _p in (_TESTS, _TESTS / "e2e"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
