"""What the script and the modparams say, parsed once (OpenSIPS acc_logic.c do_acc_parse and
acc_extra.c parse_acc_list_generic): accounting types and flags, extra_fields definitions.

Pure: no I/O, no server. Errors are ValueError("why"), which the loader reports at the modparam or the
call's file:line:col.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# do_accounting types (backends) and flags, as OpenSIPS's DO_ACC_* strings (case-insensitive, '|' joined)
TYPES = ("log", "db")
FLAGS = ("cdr", "missed", "failed")
NOT_BUILT_TYPES = {
    "aaa": "AAA (RADIUS/Diameter) accounting is not built: use \"log\" or \"db\"",
    "evi": "event interface accounting (E_ACC_CDR, E_ACC_EVENT, E_ACC_MISSED_EVENT) is not built: "
           "use \"log\" or \"db\"",
}
MAX_EXTRA = 64            # OpenSIPS MAX_ACC_EXTRA: tags an extra_fields list may define
MAX_EXTRA_VALUE = 1024    # bytes of one $acc_extra value (a longer one is cut, with a log line)

# A column / log name: written into SQL as an identifier (db) and into the log line (log)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class AccMask:
    """Which backends account this request, and with which flags: OpenSIPS's 64-bit flag mask as a set
    of (type, flag) pairs, flag "" for plain (answered transactions) accounting."""

    pairs: frozenset[tuple[str, str]] = frozenset()

    def on(self, backend: str, flag: str = "") -> bool:
        return (backend, flag) in self.pairs

    def any(self, flag: str = "") -> bool:
        return any(f == flag for _, f in self.pairs)

    def backends(self, flag: str = "") -> list[str]:
        """The backends with `flag` on, in TYPES order (log before db, as OpenSIPS reports)."""
        return [b for b in TYPES if (b, flag) in self.pairs]

    def __or__(self, other: AccMask) -> AccMask:
        return AccMask(self.pairs | other.pairs)

    def without(self, other: AccMask) -> AccMask:
        return AccMask(self.pairs - other.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)


def _tokens(text: str, what: str) -> list[str]:
    out = [t.strip().lower() for t in str(text).split("|")]
    if not all(out):
        raise ValueError(f"empty {what} in {text!r} (names are separated by '|')")
    return out


def parse_types(text: str) -> frozenset[str]:
    """'log|db' -> {"log", "db"}; aaa/evi refused (not built), anything else is no type."""
    found: set[str] = set()
    for token in _tokens(text, "accounting type"):
        if token in NOT_BUILT_TYPES:
            raise ValueError(NOT_BUILT_TYPES[token])
        if token not in TYPES:
            raise ValueError(f"invalid accounting type {token!r} (log, db)")
        found.add(token)
    return frozenset(found)


def parse_flags(text: str | None) -> frozenset[str]:
    """'cdr|missed' -> {"cdr", "missed"}; None or "" -> none."""
    if text is None or not str(text).strip():
        return frozenset()
    found: set[str] = set()
    for token in _tokens(text, "accounting flag"):
        if token not in FLAGS:
            raise ValueError(f"invalid accounting flag {token!r} (cdr, missed, failed)")
        found.add(token)
    return frozenset(found)


def mask_of(types: Iterable[str], flags: Iterable[str]) -> AccMask:
    """OpenSIPS acc_bitmask_set: every type is on for plain accounting, and for each of the flags."""
    types, flags = list(types), list(flags)
    return AccMask(frozenset((t, f) for t in types for f in ("", *flags)))


def drop_mask(types: Iterable[str] | None, flags: Iterable[str] | None) -> AccMask:
    """What drop_accounting() clears (acc_bitmask_reset): no type -> everything; a type without flags ->
    all of that type; a type with flags -> only those flags (plain accounting stays)."""
    chosen = list(types) if types else list(TYPES)
    if flags:
        return AccMask(frozenset((t, f) for t in chosen for f in flags))
    return AccMask(frozenset((t, f) for t in chosen for f in ("", *FLAGS)))


def types_fixup(value: object) -> object:
    """Load-time check of do_accounting's type argument (written out in the script)."""
    parse_types(str(value))
    return value


def flags_fixup(value: object) -> object:
    parse_flags(None if value is None else str(value))
    return value


def optional_types_fixup(value: object) -> object:
    if value is not None and str(value).strip():
        parse_types(str(value))
    return value


def table_fixup(value: object) -> object:
    if value is not None and str(value) and "$" not in str(value) and not _NAME.match(str(value)):
        raise ValueError(f"table name {value!r}: letters, digits and '_' only")
    return value


def valid_table(name: str) -> bool:
    return bool(_NAME.match(name))


@dataclass(frozen=True, slots=True)
class ExtraFields:
    """extra_fields: the tags $acc_extra(tag) sets, and per backend the (tag, name) pairs it writes (a
    log line's `name=value`, a db column)."""

    tags: tuple[str, ...] = ()
    by_backend: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def of(self, backend: str) -> tuple[tuple[str, str], ...]:
        for name, pairs in self.by_backend:
            if name == backend:
                return pairs
        return ()


def parse_extra_fields(definitions: Iterable[str]) -> ExtraFields:
    """"backend: tag -> name; tag2" definitions (the modparam may be given once per backend). A tag
    without "-> name" is its own name. A tag defined twice for one backend: the later one wins (OpenSIPS
    warns likewise)."""
    tags: list[str] = []
    backends: dict[str, dict[str, str]] = {}
    for definition in definitions:
        text = str(definition).strip()
        if not text:
            continue
        backend, sep, rest = text.partition(":")
        backend = backend.strip().lower()
        if not sep:
            raise ValueError(f"extra_fields {text!r}: missing the backend separator ':' "
                             "(\"db: tag->column\")")
        if backend in NOT_BUILT_TYPES:
            raise ValueError(f"extra_fields for {backend!r}: {NOT_BUILT_TYPES[backend]}")
        if backend not in TYPES:
            raise ValueError(f"extra_fields: invalid backend {backend!r} (log, db)")
        pairs = backends.setdefault(backend, {})
        for part in rest.split(";"):
            token = part.strip()
            if not token:
                continue
            tag, arrow, name = token.partition("->")
            tag, name = tag.strip(), (name.strip() if arrow else tag.strip())
            for word in (tag, name):
                if not _NAME.match(word):
                    raise ValueError(f"extra_fields {token!r}: {word!r} is not a name "
                                     "(letters, digits and '_')")
            if tag not in tags:
                tags.append(tag)
            pairs[tag] = name
    if len(tags) > MAX_EXTRA:
        raise ValueError(f"extra_fields: {len(tags)} tags, at most {MAX_EXTRA}")
    for backend, pairs in backends.items():
        names = list(pairs.values())
        if len(set(names)) != len(names):
            raise ValueError(f"extra_fields: a {backend} name is given to two tags")
    return ExtraFields(tuple(tags), tuple((b, tuple(p.items())) for b, p in backends.items()))


def check_extra_fields(value: object) -> None:
    parse_extra_fields(value if isinstance(value, (list, tuple)) else [str(value)])
