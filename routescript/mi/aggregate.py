"""Merging the MI answers of several worker processes into the server's one answer (docs/workers.md,
section 5). Sans-IO: the supervisor collects the replies (routescript/workers/supervisor.py) and these
functions make one result of them.

- statistics: each worker sends a snapshot of its statistics (`snapshot`), `merge_statistics` makes one
  Statistics of them, each statistic merged by its `aggregate` ("sum" or "max", core/stats.py), and
  get_statistics / list_statistics read it as they read a process's own;
- "concat" commands: the workers' lists joined (`concat`), an item whose `key` fields were seen already
  dropped;
- "each" commands: every worker ran it; `each_result` gives worker 0's answer when all succeeded, and one
  error naming every worker that failed otherwise (never a silently partial answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routescript.core.stats import AGGREGATES, Statistics

# One statistic of one worker on the control channel: [group, name, value, incremental, aggregate].
SnapshotRow = list[Any]


class MergeError(Exception):
    """A worker's answer that cannot be merged (a bug of ours: say which worker and what)."""


def snapshot(stats: Statistics) -> list[SnapshotRow]:
    """Every statistic of this process, in registration order, as rows JSON carries."""
    return [[s.module, s.name, s.value, s.incremental, s.aggregate] for s in stats.all()]


def merge_statistics(snapshots: Mapping[str, Sequence[SnapshotRow]]) -> Statistics:
    """One Statistics from the workers' snapshots (worker name -> rows). A statistic some workers lack
    (a module registers it on first use) merges the values of those that have it. The merged values are
    fixed: reading them twice gives the same figures."""
    values: dict[tuple[str, str], list[int]] = {}
    meta: dict[tuple[str, str], tuple[str, str, bool, str]] = {}
    for worker, rows in snapshots.items():
        for row in rows:
            group, name, value, incremental, aggregate = _checked_row(worker, row)
            key = (group.lower(), name.lower())
            known = meta.setdefault(key, (group, name, incremental, aggregate))
            if known[3] != aggregate:
                raise MergeError(f"{worker}: statistic {group}:{name} merges by {aggregate}, another worker "
                                 f"says {known[3]}")
            values.setdefault(key, []).append(value)
    merged = Statistics()
    for key, (group, name, incremental, aggregate) in meta.items():
        total = max(values[key]) if aggregate == "max" else sum(values[key])
        stat = merged.register(group, name, no_reset=not incremental,
                               aggregate="max" if aggregate == "max" else "sum")
        stat.set(total)
    return merged


def _checked_row(worker: str, row: Any) -> tuple[str, str, int, bool, str]:
    if (not isinstance(row, list) or len(row) != 5 or not isinstance(row[0], str)
            or not isinstance(row[1], str) or isinstance(row[2], bool) or not isinstance(row[2], int)
            or not isinstance(row[3], bool) or row[4] not in AGGREGATES):
        raise MergeError(f"{worker}: malformed statistic row {row!r:.120}")
    return row[0], row[1], row[2], row[3], row[4]


def concat(results: Sequence[Any], key: Sequence[str] = ()) -> Any:
    """The workers' results of a "concat" command joined, in worker order.

    Lists are joined; dicts (list_tcp_conns' {"Connections": [...]}, log_level's {"Processes": [...]})
    have their list values joined and their other values taken from the first worker. With `key`, a list
    item (a dict) whose values of those fields were seen already is dropped (a presentity cached by two
    workers is listed once)."""
    if not results:
        return []
    first = results[0]
    if isinstance(first, list):
        return _joined(results, key)
    if isinstance(first, dict):
        out: dict[str, Any] = {}
        for name, value in first.items():
            if isinstance(value, list):
                out[name] = _joined([_field(r, name) for r in results], key)
            else:
                out[name] = value
        return out
    return first


def _field(result: Any, name: str) -> list[Any]:
    value = result.get(name) if isinstance(result, dict) else None
    if not isinstance(value, list):
        raise MergeError(f"cannot join the workers' answers: {name!r} is a list in one and not in another")
    return value


def _joined(lists: Sequence[Any], key: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    seen: set[tuple[str, ...]] = set()
    for items in lists:
        if not isinstance(items, list):
            raise MergeError("cannot join the workers' answers: a list in one and not in another")
        for item in items:
            if key and isinstance(item, dict):
                ident = tuple(repr(item.get(k)) for k in key)
                if ident in seen:
                    continue
                seen.add(ident)
            out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class WorkerError:
    """One worker's failure of a command run in several: the JSON-RPC error it answered. `data` of an
    error each_result made of several names them already."""

    worker: str
    code: int
    message: str
    data: Any = None

    def __str__(self) -> str:
        detail = self.data if self.data is not None else self.message
        return f"{self.worker}: {detail}"


def each_result(results: Sequence[Any], errors: Sequence[WorkerError]) -> tuple[Any, WorkerError | None]:
    """An "each" command's answer: worker 0's result when every worker succeeded; else one error with
    the first failure's code and message, its data naming every worker that failed and why."""
    if not errors:
        return (results[0] if results else "OK"), None
    first = errors[0]
    return None, WorkerError(", ".join(e.worker for e in errors), first.code, first.message,
                             "; ".join(str(e) for e in errors))


__all__ = ["MergeError", "SnapshotRow", "WorkerError", "concat", "each_result",
           "merge_statistics", "snapshot"]
