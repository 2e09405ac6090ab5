"""Building frozen, slotted dataclasses from values the parser has already checked (private).

A frozen dataclass's __init__ sets each field through object.__setattr__ (about 80 ns a field, a
counted builtin call each); the parsers make several value objects per message. So the module that
defines such a class also writes a plain constructor for it: `object.__new__`, then each slot set
through its descriptor, with the setters `slot_setters` hands it. Same object, same fields, no
validation (about 0.30 us for a Via against 0.48 us through __init__).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

SlotSetter = Callable[[Any, Any], None]


def slot_setters(cls: type) -> tuple[SlotSetter, ...]:
    """The `__set__` of each field's slot descriptor, in declaration order (unpack them by name: a
    field added later makes the unpacking fail at import, not the object silently incomplete)."""
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))
