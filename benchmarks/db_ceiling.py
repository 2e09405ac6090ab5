"""The database as the shared resource (issue 18): how many PUBLISHes per second one database sustains
when only the writes are done, from 1..P processes, each with its own connection and group commit.

A PUBLISH call of the SIPp scenario writes what the presence module writes: the initial PUBLISH inserts
a presentity row, the modify PUBLISH (SIP-If-Match) updates it to a new ETag; each is committed before
its 200 (GroupCommitter). Here every process runs `--writers` concurrent callers doing exactly those
writes through `routescript.db` (the same Database, Write and GroupCommitter the server uses), with no
SIP work at all, so the figure is the ceiling the database puts on the PUBLISH rate of any number of
workers. Processes are forked before any event loop or connection exists.

    python -m benchmarks.db_ceiling --url sqlite:///tmp/x.sqlite --procs 1,2,4 --seconds 5
    python -m benchmarks.db_ceiling --url postgres://postgres@127.0.0.1:5432/test --procs 1,2,4,8

Prints one line per process count: PUBLISH writes committed per second, commits per second, mean batch
size (writes per commit) and the CPU the writer processes used (percent of one core, summed).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass

from routescript.db import open_database
from routescript.db.base import Write
from routescript.db.group import GroupCommitter

PRESENTITY = "presentity"
BODY = b"<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:u@x'>" + b"x" * 300


@dataclass(frozen=True, slots=True)
class ProcResult:
    writes: int
    batches: int
    cpu: float       # seconds of user + system CPU


async def _writer(committer: GroupCommitter, user: str, deadline: float, counts: list[int]) -> None:
    """One publisher: insert, then update to a new ETag, again and again (the scenario's two PUBLISHes)."""
    etag = uuid.uuid4().hex
    now = int(time.time())
    await committer.write((Write("insert", PRESENTITY, {
        "username": user, "domain": "bench.example", "event": "presence", "etag": etag,
        "expires": now + 3600, "received_time": now, "body": BODY, "extra_hdrs": b"", "sender": None}),))
    counts[0] += 1
    while time.monotonic() < deadline:
        new = uuid.uuid4().hex
        await committer.write((Write("update", PRESENTITY, {"etag": new, "expires": now + 3600, "body": BODY},
                                     where={"username": user, "domain": "bench.example", "event": "presence",
                                            "etag": etag}),))
        etag = new
        counts[0] += 1


async def _run_process(url: str, index: int, writers: int, start_at: float, seconds: float) -> ProcResult:
    db = await open_database(url)
    try:
        committer = GroupCommitter(db)
        await asyncio.sleep(max(0.0, start_at - time.time()))   # all processes start together
        counts = [0]
        deadline = time.monotonic() + seconds
        cpu0 = _cpu()
        await asyncio.gather(*(_writer(committer, f"p{index}w{i}", deadline, counts) for i in range(writers)))
        return ProcResult(counts[0], committer.batches, _cpu() - cpu0)
    finally:
        await db.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(url: str, index: int, writers: int, start_at: float, seconds: float,
           out: multiprocessing.queues.Queue[ProcResult]) -> None:   # type: ignore[name-defined]
    out.put(asyncio.run(_run_process(url, index, writers, start_at, seconds)))


async def _prepare(url: str) -> None:
    db = await open_database(url)
    try:
        await db.ensure_schema([PRESENTITY])
        await db.delete(PRESENTITY, {"domain": "bench.example"})
    finally:
        await db.close()


def measure(url: str, procs: int, writers: int, seconds: float) -> tuple[float, float, float, float]:
    """(writes/s, commits/s, writes per commit, CPU % of one core) with `procs` writer processes."""
    asyncio.run(_prepare(url))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    children = [ctx.Process(target=_child, args=(url, i, writers, start_at, seconds, out))
                for i in range(procs)]
    for child in children:
        child.start()
    results = [out.get(timeout=seconds + 60) for _ in children]
    for child in children:
        child.join()
    writes = sum(r.writes for r in results)
    batches = sum(r.batches for r in results)
    cpu = sum(r.cpu for r in results)
    return writes / seconds, batches / seconds, writes / max(1, batches), 100 * cpu / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.db_ceiling",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=None, help="database URL (default: a new SQLite file in a temp dir)")
    parser.add_argument("--procs", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--writers", type=int, default=200, help="concurrent callers per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    # A disk-backed directory (tmpfs would make every sync free); BENCH_DB_DIR picks another disk.
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DB_DIR")) as tmp:
        url = args.url or f"sqlite://{tmp}/ceiling.sqlite"
        print(f"{url.split('@')[-1]}: {args.writers} callers per process, {args.seconds:g} s")
        print(f"{'procs':>5} {'PUBLISH writes/s':>17} {'commits/s':>10} {'writes/commit':>14} {'CPU %':>6}")
        for procs in (int(p) for p in args.procs.split(",")):
            rate, commits, per_commit, cpu = measure(url, procs, args.writers, args.seconds)
            print(f"{procs:>5} {rate:>17,.0f} {commits:>10,.0f} {per_commit:>14.1f} {cpu:>6.0f}")


if __name__ == "__main__":
    main()
