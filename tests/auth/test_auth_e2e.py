"""End to end: `routescript run` with auth + auth_db on a SQLite subscriber table written by
`routescript db subscriber add`, REGISTER over UDP and TCP with 1 and 2 UDP workers: challenged 401,
the right password (200), wrong password, missing credentials, stale and replayed nonces, malformed
Authorization (400) - and, with 2 workers, a nonce made by one worker accepted by the other."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from rs_e2e import RunningServer, free_port, routescript, start

from routescript.modules.auth.digest import ALGORITHMS, calc_ha1, calc_response, parse_algorithms
from routescript.modules.auth.nonce import NonceMint
from routescript.testing import SipTestClient

CFG = r"""
log_level = 3
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth", "secret", "e2e-secret-phrase")
modparam("auth_db", "db_url", "sqlite://DB")

route {
    if (!is_method("REGISTER")) { sl_send_reply(405, "Method Not Allowed"); exit; }
    $var(rc) = www_authorize("", "subscriber");
    if ($var(rc) < 0) {
        xlog("L_NOTICE", "www_authorize $var(rc) $ci pid $pp\n");
        if ($var(rc) == -5) exit;
        www_challenge("", "auth", "MD5,SHA-256");
        exit;
    }
    xlog("L_NOTICE", "authorized $au $ci pid $pp\n");
    sl_send_reply(200, "OK");
}
"""

PASSWORD = "e2e-Pa55"
DOMAIN = "example.com"


@asynccontextmanager
async def serve(tmp_path: Path, proto: str,
                workers: int) -> AsyncIterator[tuple[SipTestClient, RunningServer]]:
    db = tmp_path / "subscriber.db"
    added = routescript("db", "subscriber", "add", f"sqlite://{db}", f"alice@{DOMAIN}", PASSWORD)
    assert added.returncode == 0, added.stderr
    port = free_port()
    cfg = tmp_path / "auth.cfg"
    cfg.write_text(CFG.replace("WORKERS", str(workers)).replace("PORT", str(port)).replace("DB", str(db)))
    server = start(cfg, tmp_path)
    client = await SipTestClient.start(proto, ("127.0.0.1", port), user="alice", domain=DOMAIN, timeout=5.0)
    try:
        yield client, server
    finally:
        await client.close()
        server.stop()
        assert "Traceback" not in server.log()


def register(client: SipTestClient, auth: str | None = None, call_id: str | None = None) -> Any:
    headers = [("Authorization", auth)] if auth is not None else []
    return client.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}", headers=headers,
                          call_id=call_id)


def params(value: str) -> dict[str, str]:
    return {k.strip(): v.strip('"') for k, _, v in (p.partition("=") for p in value[7:].split(", "))}


def answer(challenge: str, password: str = PASSWORD, nonce: str | None = None) -> str:
    p = params(challenge)
    alg = ALGORITHMS[p["algorithm"].upper()]
    nonce = nonce or p["nonce"]
    ha1 = calc_ha1(alg, "alice", p["realm"], password)
    uri = f"sip:{DOMAIN}"
    resp = calc_response(alg, ha1, nonce=nonce, method="REGISTER", uri=uri, qop="auth", nc="00000001",
                         cnonce="e2ec")
    return (f'Digest username="alice", realm="{p["realm"]}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm={p["algorithm"]}, qop=auth, nc=00000001, cnonce="e2ec", '
            f'opaque="{p["opaque"]}"')


async def challenge(client: SipTestClient, call_id: str | None = None) -> list[str]:
    resp = await client.send_request(register(client, call_id=call_id))
    assert resp.status == 401
    values = resp.header_all("WWW-Authenticate")
    assert [params(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    assert all(params(v)["realm"] == DOMAIN and "stale" not in v for v in values)
    return values


@pytest.mark.parametrize(("proto", "workers"), [("udp", 1), ("tcp", 1), ("udp", 2), ("tcp", 2)])
async def test_register_with_digest(tmp_path: Path, proto: str, workers: int) -> None:
    async with serve(tmp_path, proto, workers) as (client, server):
        await _register_cases(client, server)


async def _register_cases(client: SipTestClient, server: RunningServer) -> None:
    sha, md5 = await challenge(client)
    # the right password (SHA-256 answer): 200
    auth = answer(sha)
    assert (await client.send_request(register(client, auth))).status == 200
    # the same credentials again (a replay, a new transaction): 401 stale=true
    replay = await client.send_request(register(client, auth))
    assert replay.status == 401 and all("stale=true" in v for v in replay.header_all("WWW-Authenticate"))
    # MD5 answer to a fresh challenge: 200
    md5 = (await challenge(client))[1]
    assert (await client.send_request(register(client, answer(md5)))).status == 200
    # wrong password: 401 without stale
    sha = (await challenge(client))[0]
    wrong = await client.send_request(register(client, answer(sha, password="guess")))
    assert wrong.status == 401 and "stale" not in wrong.header("WWW-Authenticate")
    # an expired nonce of ours (signed with the configured secret): 401 stale=true
    offered = sum(a.bit for a in parse_algorithms("MD5,SHA-256")) | 0x40
    old = NonceMint.from_phrase("e2e-secret-phrase", 30).make(time.time() - 120, 1, offered)
    stale = await client.send_request(register(client, answer(md5, nonce=old)))
    assert stale.status == 401
    assert "stale=true" in stale.header("WWW-Authenticate")
    # malformed Authorization: 400 from www_authorize
    malformed = 'Digest username="alice", realm="example.com", nonce="x'
    bad = await client.send_request(register(client, malformed))
    assert bad.status == 400
    for code in ("-4", "-3", "-2", "-5"):   # a worker's log line may follow its reply by a moment
        server.wait_for(f"www_authorize {code} ", timeout=5.0)
    assert PASSWORD not in server.log()


async def test_nonce_from_one_worker_accepted_by_the_other(tmp_path: Path) -> None:
    """2 UDP workers: a REGISTER goes to the worker crc32(Call-ID) % 2 (docs/workers.md 2, rule 4)."""
    async with serve(tmp_path, "udp", 2) as (client, server):
        await _cross_worker(client, server)


async def _cross_worker(client: SipTestClient, server: RunningServer) -> None:
    ids = [f"cross-{i}@e2e" for i in range(40)]
    first = ids[0]
    other = next(c for c in ids if zlib.crc32(c.encode()) % 2 != zlib.crc32(first.encode()) % 2)
    sha = (await challenge(client, call_id=first))[0]
    ok = await client.send_request(register(client, answer(sha), call_id=other))
    assert ok.status == 200
    server.wait_for(f"www_authorize -4 {first} pid", timeout=5.0)   # log lines may follow the replies
    server.wait_for(f"authorized alice {other} pid", timeout=5.0)
    log = server.log()
    challenged = re.search(rf"www_authorize -4 {re.escape(first)} pid (\d+)", log)
    authorized = re.search(rf"authorized alice {re.escape(other)} pid (\d+)", log)
    assert challenged and authorized and challenged.group(1) != authorized.group(1)
    # and the replay of it on the first worker is refused (one replay table for both)
    replay = await client.send_request(register(client, answer(sha), call_id=first))
    assert replay.status == 401 and "stale=true" in replay.header("WWW-Authenticate")
