"""A faster constructor for frozen, slotted dataclasses (private).

A frozen dataclass's __init__ sets each field through object.__setattr__, about 80 ns a field; the
parsers make several value objects per message, so they use `fast_new(cls)`, which writes the slots
through their descriptors. Same object, same fields, no validation - only for trusted, parsed values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def fast_new(cls: type[T]) -> Callable[..., T]:
    """A function taking every field positionally (in declaration order) and returning an instance."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = ["    o = _new(_cls)"]
    for name in names:
        env[f"_set_{name}"] = getattr(cls, name).__set__
        body.append(f"    _set_{name}(o, {name})")
    body.append("    return o")
    src = f"def new({', '.join(names)}):\n" + "\n".join(body) + "\n"
    exec(src, env)  # noqa: S102 - generated from the dataclass's own field names, like dataclasses does
    return env["new"]  # type: ignore[no-any-return]
