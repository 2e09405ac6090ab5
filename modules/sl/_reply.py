"""Load-time check of a literal reply code (OpenSIPS fixup: a code outside 100..699 is refused)."""

from __future__ import annotations

from typing import Any


def check_code(value: Any) -> Any:
    try:
        code = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"reply code must be a number, got \"{value}\"") from None
    if not 100 <= code <= 699:
        raise ValueError(f"reply code {code} is outside 100..699")
    return code
