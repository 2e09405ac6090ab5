"""Where the Python calls of a scenario go, by stage of a request's life (by hand, not collected by pytest):

    .venv/bin/python -m benchmarks.call_breakdown [publish|subscribe|all] [--calls N] [--top K]

The same run as `bench_inprocess --count` (a real Server on examples/presence.cfg, cProfile around the
measured calls only), read per function object (Profile.getstats, as the benchmark counts). Each function
the tables below name is put in a stage by where its code lives; every other function (C builtins, the
SIP value parsers, stdlib helpers, ...) is charged to the stages of its callers, in proportion to the
calls each caller made to it, so `len()` from build_reply counts as reply sending and `len()` from
parse_message as receiving. Prints the calls per operation by stage, then the functions with the most
calls and who calls them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
from collections import defaultdict
from collections.abc import Iterable
from types import CodeType

from benchmarks.bench_inprocess import run_measured
from routescript.core.server import install_event_loop_policy

Code = CodeType | str
STAGES = (
    "benchmark harness (fake peer)",
    "transport receive & parse",
    "core dispatch & script run",
    "presence: facts extraction",
    "presence: table decision",
    "presence: persistence / group commit",
    "presence: PUBLISH body (PIDF)",
    "reply send (build_reply, tm, to-tag)",
    "NOTIFY (build, send, client transaction)",
    "database (SQL, aiosqlite hand-off)",
    "asyncio overhead (tasks, futures, locks)",
    "unattributed",
)
UNATTRIBUTED = STAGES[-1]

# (path fragment, qualified-name prefix or "", stage): the first that matches a function names its stage.
RULES: tuple[tuple[str, str, str], ...] = (
    ("benchmarks/", "", STAGES[0]),
    ("routescript/transport/udp.py", "", STAGES[1]),
    ("routescript/transport/layer.py", "TransportLayer.on_datagram", STAGES[1]),
    ("routescript/transport/layer.py", "TransportLayer.receive", STAGES[1]),
    ("routescript/transport/framing.py", "", STAGES[1]),
    ("routescript/sip/parse.py", "", STAGES[1]),
    ("routescript/core/dispatch.py", "", STAGES[2]),
    ("routescript/core/routes.py", "", STAGES[2]),
    ("routescript/core/events.py", "", STAGES[2]),
    ("routescript/core/functions.py", "", STAGES[2]),
    ("routescript/transaction/client.py", "", STAGES[8]),
    ("routescript/transaction/keys.py", "client_key", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer.send_request", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer.on_response", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer._deliver", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer._first_send", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer._stop_first_send", STAGES[8]),
    ("routescript/transaction/layer.py", "_call", STAGES[8]),
    ("routescript/transaction/core.py", "TransactionCore.send_request", STAGES[8]),
    ("routescript/transaction/core.py", "TransactionCore.receive_response", STAGES[8]),
    ("routescript/transaction/core.py", "TransactionCore._retire_client", STAGES[8]),
    ("routescript/transaction/core.py", "TransactionCore._run_client", STAGES[8]),
    ("routescript/transaction/layer.py", "TransactionLayer.create", STAGES[7]),
    ("routescript/transaction/layer.py", "TransactionLayer.lookup", STAGES[7]),
    ("routescript/transaction/layer.py", "TransactionLayer.reply", STAGES[7]),
    ("routescript/transaction/layer.py", "TransactionLayer.pending", STAGES[7]),
    ("routescript/transaction/core.py", "TransactionCore.create", STAGES[7]),
    ("routescript/transaction/core.py", "TransactionCore.lookup", STAGES[7]),
    ("routescript/transaction/core.py", "TransactionCore.reply", STAGES[7]),
    ("routescript/transaction/core.py", "TransactionCore._complete_udp", STAGES[7]),
    ("routescript/transaction/server.py", "", STAGES[7]),
    ("routescript/transaction/completed.py", "", STAGES[7]),
    ("routescript/transaction/keys.py", "", STAGES[7]),
    ("routescript/sip/build.py", "build_reply", STAGES[7]),
    ("routescript/sip/assembled.py", "", STAGES[8]),
    ("routescript/core/ratelimit.py", "", STAGES[2]),
    ("routescript/script/", "", STAGES[2]),
    ("modules/sipmsgops/", "", STAGES[2]),
    ("modules/maxfwd/", "", STAGES[2]),
    ("modules/xlog/", "", STAGES[2]),
    ("modules/textops/", "", STAGES[2]),
    ("modules/signaling/", "", STAGES[7]),
    ("modules/sl/", "", STAGES[7]),
    ("modules/tm/", "", STAGES[2]),
    ("modules/presence/module.py", "", STAGES[2]),
    ("modules/presence/publish.py", "PublishHandler._publish_facts", STAGES[3]),
    ("modules/presence/subscribe.py", "SubscribeHandler._subscribe_facts", STAGES[3]),
    ("modules/presence/subscription.py", "SubscribeFacts", STAGES[3]),
    ("modules/presence/persistence.py", "", STAGES[5]),
    ("modules/presence/storage.py", "", STAGES[5]),
    ("modules/presence/notify.py", "", STAGES[8]),
    ("modules/presence/sender.py", "", STAGES[8]),
    ("modules/presence_xml/", "", STAGES[6]),
    ("modules/presence/", "", STAGES[4]),
    ("routescript/core/replies.py", "", STAGES[7]),
    ("routescript/core/requests.py", "", STAGES[8]),
    ("routescript/db/", "", STAGES[9]),
    ("modules/db_sqlite/", "", STAGES[9]),
    ("aiosqlite/", "", STAGES[9]),
    ("/asyncio/", "", STAGES[10]),
    ("_weakrefset.py", "", STAGES[10]),
)
# Charged to their callers' stages although their file would name one: shared helpers.
SHARED = ("routescript/transaction/", "routescript/transport/", "routescript/sip/", "routescript/core/")


def stage_of(code: Code) -> str | None:
    """The stage a function belongs to by its place, or None: charged to its callers."""
    if isinstance(code, str):
        return None
    path = code.co_filename.replace("\\", "/")
    if path.startswith("<") and path.endswith(".cfg>"):
        return STAGES[2]      # the compiled route script
    for fragment, prefix, stage in RULES:
        if fragment in path and code.co_qualname.startswith(prefix):
            return stage
    return None


def label(code: Code) -> str:
    """`package/module.py:line qualname` (a C function as cProfile names it)."""
    if isinstance(code, str):
        return code
    path = code.co_filename.replace("\\", "/")
    for root in ("routescript/", "modules/", "benchmarks/", "asyncio/", "aiosqlite/"):
        if root in path:
            path = path[path.rindex(root):]
            break
    else:
        path = path.rsplit("/", 1)[-1]
    return f"{path}:{code.co_firstlineno} {code.co_qualname}"


class Calls:
    """A profile's call graph per function object: calls made, and by whom."""

    def __init__(self, prof: cProfile.Profile) -> None:
        self.count: dict[Code, int] = defaultdict(int)
        self.callers: dict[Code, dict[Code, int]] = defaultdict(lambda: defaultdict(int))
        for entry in prof.getstats():
            self.count[entry.code] += entry.callcount
            for sub in entry.calls or ():
                self.callers[sub.code][entry.code] += sub.callcount

    def stages(self, rounds: int = 60) -> dict[Code, dict[str, float]]:
        """Each function's calls as shares of stages: its own stage, or its callers' in proportion."""
        share: dict[Code, dict[str, float]] = {}
        free: list[Code] = []
        for code in self.count:
            stage = stage_of(code)
            if stage is None:
                free.append(code)
                share[code] = {UNATTRIBUTED: 1.0}
            else:
                share[code] = {stage: 1.0}
        for _ in range(rounds):     # callers first reach their callees; a few rounds settle chains
            for code in free:
                callers = self.callers.get(code)
                if not callers:
                    continue
                mixed: dict[str, float] = defaultdict(float)
                weight = sum(callers.values()) or 1
                for caller, made in callers.items():
                    for stage, part in share.get(caller, {UNATTRIBUTED: 1.0}).items():
                        mixed[stage] += part * made / weight
                share[code] = dict(mixed)
        return share

    def by_stage(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for code, parts in self.stages().items():
            for stage, part in parts.items():
                totals[stage] += part * self.count[code]
        return totals

    def contributors(self, k: int) -> dict[str, list[tuple[Code, float]]]:
        """Per stage, the k functions that put the most calls in it."""
        per: dict[str, list[tuple[Code, float]]] = defaultdict(list)
        for code, parts in self.stages().items():
            for stage, part in parts.items():
                per[stage].append((code, part * self.count[code]))
        return {stage: sorted(rows, key=lambda row: -row[1])[:k] for stage, rows in per.items()}

    def top(self, k: int) -> list[tuple[Code, int]]:
        return sorted(self.count.items(), key=lambda item: -item[1])[:k]


def table(rows: Iterable[tuple[str, float]], n: int, total: float) -> str:
    lines = ["| stage | calls per call | share |", "|---|---:|---:|"]
    for stage, calls in rows:
        lines.append(f"| {stage} | {calls / n:,.0f} | {calls / total * 100:.1f}% |")
    lines.append(f"| **total** | **{total / n:,.0f}** | |")
    return "\n".join(lines)


def report(name: str, calls: Calls, n: int, top: int) -> str:
    totals = calls.by_stage()
    whole = sum(totals.values())
    out = [f"### {name}: {whole / n:,.0f} Python calls per call", "",
           table(((s, totals[s]) for s in STAGES if totals.get(s)), n, whole)]
    share = calls.stages()
    out += ["", "Functions that put the most calls in each stage:", ""]
    biggest = calls.contributors(6)
    for stage in STAGES:
        if stage in biggest and totals.get(stage, 0) / n >= 1:
            out.append(f"- {stage}: " + "; ".join(f"`{label(c)}` {v / n:.0f}" for c, v in biggest[stage]))
    out += ["", f"Top {top} functions by calls per call (with their main callers):", "",
            "| calls | function | called from |", "|---:|---|---|"]
    for code, count in calls.top(top):
        callers = sorted(calls.callers.get(code, {}).items(), key=lambda item: -item[1])[:3]
        origin = "; ".join(f"{label(c)} ({made / n:.1f})" for c, made in callers) or "-"
        main = max(share[code].items(), key=lambda item: item[1])[0]
        out.append(f"| {count / n:.1f} | `{label(code)}` [{main}] | {origin} |")
    return "\n".join(out)


def shared_note() -> str:
    return "Charged to callers: " + ", ".join(SHARED) + " (unless a rule names them), C functions, stdlib."


async def profile(name: str, n: int) -> tuple[Calls, int]:
    prof = cProfile.Profile()
    _, count, _ = await run_measured(name, n, prof)
    return Calls(prof), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", nargs="?", default="all", choices=("publish", "subscribe", "all"))
    parser.add_argument("--calls", type=int, default=2_000, help="calls to measure")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)
    install_event_loop_policy()
    for name in ("publish", "subscribe") if args.scenario == "all" else (args.scenario,):
        calls, n = asyncio.run(profile(name, args.calls))
        print(report(name, calls, n, args.top), "", sep="\n", flush=True)
    print(shared_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
