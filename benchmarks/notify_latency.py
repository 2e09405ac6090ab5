"""PUBLISH -> NOTIFY latency while the server carries background PUBLISH load (issue 18's target:
p99 under 5 ms across workers at half the maximum rate).

One watcher subscribes to sip:latency@127.0.0.1; a publisher then sends PUBLISHes that change the
presentity's note every `interval`, each answered before the next; the figure is the time from
sending a PUBLISH to receiving the NOTIFY that carries its note. Meanwhile SIPp's publish.xml loads the
server with other presentities at `background` calls/s.

`placement`:
- "same": the default `worker_affinity = "uri"`: the PUBLISH and the SUBSCRIBE of one presentity meet
  in one worker (the path almost every NOTIFY takes);
- "cross": `worker_affinity = "callid"`, with Call-IDs chosen so that the SUBSCRIBE lands in worker 0
  and every PUBLISH in worker 1: each NOTIFY needs the announcement between workers (stored, announced,
  read back by worker 0, sent).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import bench_config, start_routescript
from benchmarks.settings import Settings
from benchmarks.sipprun import SCENARIOS, SippProcess, log, sipp_command, step_stats
from routescript.testing.client import SipTestClient
from routescript.testing.pidf import pidf

PRESENTITY = "sip:latency@127.0.0.1"


@dataclass(frozen=True, slots=True)
class LatencyResult:
    placement: str
    workers: int
    background: int
    samples: int
    lost: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    background_failed: int

    def line(self) -> str:
        return (f"  {self.placement:<5} workers={self.workers} background={self.background}/s "
                f"samples={self.samples} lost={self.lost} p50={self.p50_ms:.2f}ms p99={self.p99_ms:.2f}ms "
                f"max={self.max_ms:.2f}ms background_failed={self.background_failed}")


def call_id_for_slot(slot: int, workers: int, prefix: str, counter: itertools.count[int]) -> str:
    """A Call-ID that worker_affinity = "callid" sends to `slot` (crc32(Call-ID) % N, as
    routescript/workers/dispatch.py owner_slot rule 4)."""
    while True:
        cid = f"{prefix}-{next(counter)}@bench"
        if zlib.crc32(cid.encode()) % workers == slot:
            return cid


async def _probe(port: int, workers: int, cross: bool, samples: int,
                 interval: float) -> tuple[list[float], int]:
    counter = itertools.count(1)
    watcher = await SipTestClient.start("udp", ("127.0.0.1", port), user="watcher", timeout=3.0)
    publisher = await SipTestClient.start("udp", ("127.0.0.1", port), user="latency", timeout=3.0)
    watcher.auto_reply["NOTIFY"] = 200
    try:
        def cid(slot: int, prefix: str) -> str | None:
            return call_id_for_slot(slot, workers, prefix, counter) if cross else None

        first = publisher.publish(PRESENTITY, pidf(PRESENTITY, note="n0"), call_id=cid(1, "pub"))
        ok = await publisher.send_request(first)
        etag = ok.header("sip-etag")
        sub = watcher.subscribe(PRESENTITY, expires=3600, call_id=cid(0, "sub"))
        resp = await watcher.send_request(sub)
        assert resp.status == 200, f"SUBSCRIBE answered {resp.status}"
        await watcher.expect_request("NOTIFY", call_id=sub.call_id)   # the initial NOTIFY
        lat: list[float] = []
        lost = 0
        for i in range(1, samples + 1):
            note = f"n{i}"
            req = publisher.publish(PRESENTITY, pidf(PRESENTITY, note=note), etag=etag, call_id=cid(1, "pub"))
            t0 = time.perf_counter()
            publisher.send(req)
            try:
                while True:
                    notify = await watcher.expect_request("NOTIFY", call_id=sub.call_id, timeout=2.0)
                    if f"<note>{note}</note>".encode() in notify.body:
                        lat.append((time.perf_counter() - t0) * 1000)
                        break
                ok = await publisher.expect_response(req, final=True)
                etag = ok.header("sip-etag") or etag
            except AssertionError:
                lost += 1
            await asyncio.sleep(interval)
        return lat, lost
    finally:
        await watcher.close()
        await publisher.close()


def measure_latency(workdir: Path, settings: Settings, *, workers: int, placement: str, background: int,
                    samples: int = 400, interval: float = 0.01) -> LatencyResult:
    cfg = bench_config("presence.cfg", workdir, 5060, workers=workers)
    if placement == "cross":
        cfg.write_text('worker_affinity = "callid"\n' + cfg.read_text())
    with start_routescript(str(cfg), workdir / "run", workers=workers) as srv:
        seconds = samples * (interval + 0.004) + 5
        sipp = None
        if background:
            calls = int(background * seconds)
            cmd = sipp_command(SCENARIOS / "publish.xml", srv.port, background, calls, settings=settings,
                               timeout_s=int(seconds * 3 + 20))
            sipp = SippProcess(workdir / "background", cmd, int(seconds * 3 + 20))
            time.sleep(1.0)   # the load is on before the first sample
        lat, lost = asyncio.run(_probe(srv.port, workers, placement == "cross", samples, interval))
        failed = 0
        if sipp is not None:
            run = sipp.wait()
            failed = step_stats(run, int(background * seconds)).failed
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    nan = float("nan")
    res = LatencyResult(placement, workers, background, len(lat), lost,
                        statistics.median(lat) if lat else nan, p99, lat[-1] if lat else nan, failed)
    log(res.line())
    return res
