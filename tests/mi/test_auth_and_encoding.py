"""The sans-IO parts of MI hardening: scrypt hashes and users tables (routescript.mi.auth), basic
credentials, and the sliced JSON encoding of long results (routescript.mi.jsonrpc.encode_reply)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from routescript.mi.auth import (AuthConfigError, Users, hash_password, parse_basic, parse_hash,
                                 verify_password)
from routescript.mi.jsonrpc import dumps, encode_reply
from routescript.mi.walk import WALK_SLICE

# cheap parameters: these tests check the format and the comparison, not the cost
FAST = {"n": 16, "r": 1, "p": 1}


def test_hash_round_trip() -> None:
    text = hash_password("pässword", **FAST)
    assert text.startswith("$scrypt$n=16,r=1,p=1$")
    stored = parse_hash(text)
    assert verify_password("pässword", stored)
    assert not verify_password("password", stored)
    assert not verify_password("x" * 2000, stored)  # over MAX_PASSWORD: refused without deriving
    assert hash_password("same", **FAST) != hash_password("same", **FAST)  # a fresh salt each time


@pytest.mark.parametrize("bad, why", [
    ("plaintext", "looks like"),
    ("$md5$abc$def$ghi", "unknown password hash scheme"),
    ("$scrypt$n=15,r=8,p=1$c2FsdA$" + "A" * 43, "power of two"),
    ("$scrypt$n=16777216,r=8,p=1$c2FsdA$" + "A" * 43, "out of bounds"),
    ("$scrypt$r=8,p=1$c2FsdA$" + "A" * 43, "expected n="),
    ("$scrypt$n=16,r=1,p=1$c2FsdA$!!!", "base64"),
    ("$scrypt$n=16,r=1,p=1$c2FsdA$AAAA", "16..64 bytes"),
])
def test_bad_hashes_are_refused(bad: str, why: str) -> None:
    with pytest.raises(AuthConfigError, match=why):
        parse_hash(bad)


def test_users_table() -> None:
    users = Users()
    assert not users
    text = "# ops\n\nadmin:" + hash_password("a", **FAST) + "\n ops:" + hash_password("o", **FAST)
    users.add_file_text(text, "users")
    assert len(users) == 2
    assert users.check("admin", "a") and users.check("ops", "o")
    assert not users.check("admin", "o") and not users.check("nobody", "a")
    with pytest.raises(AuthConfigError, match="given twice"):
        users.add_entry("admin:" + hash_password("b", **FAST), "modparam")
    with pytest.raises(AuthConfigError, match=r"users:3: expected name:\$scrypt"):
        Users().add_file_text("# c\n\nno-colon-here\n", "users")


def test_parse_basic() -> None:
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert parse_basic(header("admin:pa:ss")) == ("admin", "pa:ss")  # RFC 7617: split at the first colon
    assert parse_basic(header("admin:")) == ("admin", "")
    assert parse_basic("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", header("no-colon"), "Basic " + "A" * 5000):
        assert parse_basic(bad) is None


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize("count", [0, 1, WALK_SLICE, WALK_SLICE + 1, 3 * WALK_SLICE + 7])
def test_encode_reply_is_dumps_in_slices(pretty: bool, count: int) -> None:
    rows = [{"pres_uri": f"sip:u{i}@h", "n": i, "nested": [{"a": None}, []], "text": "é\n\"q\""}
            for i in range(count)]
    for req_id in (1, "abc", None):
        reply = {"jsonrpc": "2.0", "result": rows, "id": req_id}
        text = asyncio.run(encode_reply(reply, pretty))
        assert text == dumps(reply, pretty)
        assert json.loads(text) == reply


def test_encode_reply_lets_the_loop_run() -> None:
    """Between two slices of a long result other tasks get their turn."""
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        await encode_reply({"jsonrpc": "2.0", "result": list(range(10 * WALK_SLICE)), "id": 1})
        task.cancel()
        return ticks - before

    assert asyncio.run(main()) >= 9
