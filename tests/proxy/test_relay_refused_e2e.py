"""t_relay to a TCP destination that refuses connections, with 1 and 2 worker processes: the failure route
sees the same code, as quickly (docs/workers.md section 4).

In one process the branch's first send opens the connection, is refused, and the branch ends at once
with the transport error (RFC 3261 17.1.4: a local 503). With 2 workers the INVITE is worker 1's (its
Call-ID) and worker 1 accepts no TCP connection: the branch goes out through worker 0, whose connect is
refused; worker 0 reports it back and worker 1's branch ends the same way - not with 408 after Timer B
(fr_timeout, 10 s here)."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from proxy_e2e import PROXY_SCRIPT, free_port, start, write_cfg

from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

FR_TIMEOUT = 10
QUICK = 3.0
_ids = count(1)


def call_id_on(slot: int, workers: int) -> str:
    """A Call-ID whose INVITE worker `slot` handles (crc32(Call-ID) % workers)."""
    while True:
        call_id = f"refused-{next(_ids)}-{time.monotonic_ns()}"
        if zlib.crc32(call_id.encode()) % workers == slot:
            return call_id


def refused_port() -> int:
    return free_port()   # bound and closed again: nothing listens there


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[object, int, int]]:
    workers = int(request.param)
    port = free_port()
    script = PROXY_SCRIPT.replace('modparam("tm", "fr_timeout", 2)',
                                  f'modparam("tm", "fr_timeout", {FR_TIMEOUT})')
    server = start(write_cfg(tmp_path, port, workers, script), tmp_path)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    try:
        yield server, port, workers
    finally:
        server.stop()


async def test_a_refused_tcp_branch_reaches_the_failure_route_as_in_one_process(
        proxy: tuple[object, int, int]) -> None:
    server, port, workers = proxy
    dead = f"sip:nobody@127.0.0.1:{refused_port()};transport=tcp"
    async with await SipTestClient.start("udp", ("127.0.0.1", port), user="kim", timeout=QUICK) as caller:
        invite = caller.request("INVITE", dead, headers=[("X-Next", dead)], body=b"v=0\r\n",
                                content_type="application/sdp")
        invite.set_header("Call-ID", call_id_on(workers - 1, workers))   # worker 1's with 2 workers
        started = time.monotonic()
        caller.send(invite)
        final = await caller.expect_response(invite, final=True, timeout=QUICK)
        took = time.monotonic() - started
    log = server.log()  # type: ignore[attr-defined]
    codes = re.findall(r"failure_route\[next\] code (\d+) from kim", log)
    # the transport error's 503 (no t_relay again: the script retries only 486 and 408), answered at once
    assert codes == ["503"], log
    assert final.status == 500, final.to_bytes()   # a 503 is not passed upstream (RFC 3261 16.7 step 6)
    assert took < QUICK
    assert "Traceback" not in log
