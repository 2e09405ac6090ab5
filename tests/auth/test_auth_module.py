"""auth + auth_db in process: small scripts run by routescript.testing.route_run over requests built
here, the subscriber table on SQLite and PostgreSQL (tests/db's fixtures), replies captured."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from routescript.core.loading import LoadError
from routescript.core.server import Server
from routescript.modules.auth.digest import ALGORITHMS, calc_ha1, calc_response, session_ha1
from routescript.modules.auth_db import subscribers
from routescript.testing import route_run as rr


SCRIPT = r"""
loadmodule "sl.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "URL")
modparam("auth_db", "load_credentials", "$avp(mail)=email_address;rpid")
EXTRA
route {
    $var(rc) = www_authorize("", "subscriber");
    xlog("L_INFO", "www_authorize $var(rc) au=$au ar=$ar\n");
    if ($var(rc) < 0) {
        if ($var(rc) == -5) exit;
        www_challenge("", "auth", "ALGS");
        exit;
    }
    consume_credentials();
    xlog("L_INFO", "mail=$avp(mail) rpid=$avp(rpid)\n");
    sl_send_reply(200, "OK");
}
"""

PASSWORD = "s3cr3t-pw"


class Harness:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.sent: list[tuple[int, str, list[tuple[str, str]]]] = []

        def reply(ctx: Any, code: int, reason: str | None = None, **kw: Any) -> None:
            self.sent.append((code, reason or "", list(kw.get("headers", ()))))
            if code >= 200:
                ctx.replied = True
        server.reply = reply  # type: ignore[method-assign]
        server.send_reply = reply  # type: ignore[method-assign]

    async def run(self, msg: Any) -> Any:
        return await rr.run(self.server, msg)


@pytest.fixture
async def make(tmp_path: Path, db_url: str) -> AsyncIterator[Any]:
    servers: list[Server] = []

    async def build(extra: str = "", algs: str = "MD5,SHA-256,SHA-512-256") -> Harness:
        text = SCRIPT.replace("URL", db_url).replace("EXTRA", extra).replace("ALGS", algs)
        server = rr.load(tmp_path, text, name=f"t{len(servers)}.cfg")
        servers.append(server)
        for module in server.modules.instances.values():
            await module.start()
        return Harness(server)

    await subscribers.add(db_url, subscribers.Account("alice", "example.com"), PASSWORD)
    yield build
    for server in servers:
        await server.databases.close_all()


def register(auth: str | None = None, header: str = "Authorization", body: str = "") -> Any:
    extra = f"{header}: {auth}\r\n" if auth is not None else ""
    return rr.request("REGISTER", ruri="sip:example.com", extra=extra)


def challenge_params(value: str) -> dict[str, str]:
    out = {}
    for part in value[len("Digest "):].split(", "):
        k, _, v = part.partition("=")
        out[k] = v.strip('"')
    return out


def answer(challenge: str, *, password: str = PASSWORD, user: str = "alice", method: str = "REGISTER",
           uri: str = "sip:example.com", nc: str = "00000001", cnonce: str = "0a4f113b") -> str:
    p = challenge_params(challenge)
    alg = ALGORITHMS[p["algorithm"].upper()]
    ha1 = session_ha1(alg, calc_ha1(alg, user, p["realm"], password), p["nonce"], cnonce)
    resp = calc_response(alg, ha1, nonce=p["nonce"], method=method, uri=uri, qop="auth", nc=nc, cnonce=cnonce)
    return (f'Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{uri}", '
            f'response="{resp}", algorithm={p["algorithm"]}, qop=auth, nc={nc}, cnonce="{cnonce}", '
            f'opaque="{p["opaque"]}"')


async def challenge(h: Harness) -> list[str]:
    await h.run(register())
    code, reason, headers = h.sent[-1]
    assert (code, reason) == (401, "Unauthorized")
    return [v for n, v in headers if n == "WWW-Authenticate"]


async def test_challenge_then_each_algorithm_authorizes(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    h = await make()
    values = await challenge(h)
    assert [challenge_params(v)["algorithm"] for v in values] == ["SHA-512-256", "SHA-256", "MD5"]
    assert all(challenge_params(v)["realm"] == "example.com" and challenge_params(v)["qop"] == "auth"
               for v in values)
    caplog.set_level(logging.DEBUG)
    for i, value in enumerate(values):
        fresh = (await challenge(h))[i] if i else value
        msg = register(answer(fresh))
        ctx = await h.run(msg)
        assert h.sent[-1][:2] == (200, "OK"), (value, h.sent[-1])
        assert not msg.has_header("Authorization")               # consume_credentials()
        # load_credentials: email_address ('' by default) loaded, a NULL rpid not
        assert ctx.avps.get("mail") == [""] and "rpid" not in ctx.avps
    assert "www_authorize 1 au=alice ar=example.com" in caplog.text
    _no_secrets(caplog.text)


def _no_secrets(text: str) -> None:
    acct = subscribers.Account("alice", "example.com")
    for secret in (PASSWORD, *subscribers.hashes(acct, PASSWORD).values()):
        if secret:
            assert secret not in text


async def test_return_codes(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = await make(algs="MD5")
    md5 = (await challenge(h))[0]
    assert "www_authorize -4" in caplog.text                     # no credentials
    # wrong password: -2, then a fresh challenge
    await h.run(register(answer(md5, password="nope")))
    assert "www_authorize -2" in caplog.text and h.sent[-1][0] == 401
    # unknown user: -1
    await h.run(register(answer(md5, user="mallory")))
    assert "www_authorize -1" in caplog.text
    # right password: 1; the same nonce again (a replay): -3, and the new challenge says stale=true
    await h.run(register(answer(md5)))
    assert h.sent[-1][0] == 200
    await h.run(register(answer(md5, nc="00000002")))
    assert "www_authorize -3" in caplog.text
    assert h.sent[-1][0] == 401 and all("stale=true" in v for _, v in h.sent[-1][2])
    # an expired nonce: -3 stale
    fresh = (await challenge(h))[0]
    auth = h.server.modules.get("auth")
    assert auth is not None
    auth.clock = lambda: 10.0 ** 10    # type: ignore[attr-defined]
    caplog.clear()
    await h.run(register(answer(fresh)))
    assert "www_authorize -3" in caplog.text and "stale=true" in h.sent[-1][2][0][1]
    # a nonce that is not ours: -3 stale too
    caplog.clear()
    auth.clock = __import__("time").time    # type: ignore[attr-defined]
    await h.run(register(answer(md5.replace(challenge_params(md5)["nonce"], "forged"))))
    assert "www_authorize -3" in caplog.text
    # malformed credentials: 400 sent by www_authorize, -5
    caplog.clear()
    await h.run(register('Digest username="alice", realm="example.com"'))
    assert "www_authorize -5" in caplog.text and h.sent[-1][0] == 400
    # an algorithm the challenge did not offer: -2
    caplog.clear()
    h2 = await make(algs="SHA-256")
    sha = (await challenge(h2))[0]
    await h2.run(register(answer(sha.replace("algorithm=SHA-256", "algorithm=MD5"))))
    assert "www_authorize -2" in caplog.text
    _no_secrets(caplog.text)


async def test_calculate_ha1_plain_text_and_use_domain(make: Any, db_url: str) -> None:
    await subscribers.passwd(db_url, subscribers.Account("alice", "example.com"), PASSWORD, plain_text=True)
    h = await make('modparam("auth_db", "calculate_ha1", 1)\n'
                   'modparam("auth_db", "password_column", "password")\n'
                   'modparam("auth_db", "use_domain", 1)')
    values = await challenge(h)
    await h.run(register(answer(values[1])))   # SHA-256 from the plain-text password
    assert h.sent[-1][0] == 200


async def test_proxy_challenge_and_db_does_uri_exist(tmp_path: Path, db_url: str) -> None:
    await subscribers.add(db_url, subscribers.Account("bob", "example.com"), "pw")
    script = f"""
loadmodule "sl.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "{db_url}")
route {{
    if (!db_does_uri_exist("$ru", "subscriber")) {{ sl_send_reply(404, "Not Found"); exit; }}
    if (!proxy_authorize("example.com", "subscriber")) {{ proxy_challenge("example.com"); exit; }}
    sl_send_reply(200, "OK");
}}
"""
    server = rr.load(tmp_path, script)
    for m in server.modules.instances.values():
        await m.start()
    h = Harness(server)
    try:
        await h.run(rr.request("INVITE", ruri="sip:nobody@example.com"))
        assert h.sent[-1][0] == 404
        await h.run(rr.request("INVITE", ruri="sip:bob@example.com"))
        code, reason, headers = h.sent[-1]
        assert (code, reason) == (407, "Proxy Authentication Required")
        assert [n for n, _ in headers] == ["Proxy-Authenticate"] and "qop" not in headers[0][1]
        p = challenge_params(headers[0][1])
        ha1 = calc_ha1(ALGORITHMS["MD5"], "bob", "example.com", "pw")
        uri = "sip:bob@example.com"
        resp = calc_response(ALGORITHMS["MD5"], ha1, nonce=p["nonce"], method="INVITE", uri=uri)
        cred = (f'Digest username="bob", realm="example.com", nonce="{p["nonce"]}", uri="{uri}", '
                f'response="{resp}"')
        await h.run(rr.request("INVITE", ruri=uri, extra=f"Proxy-Authorization: {cred}\r\n"))
        assert h.sent[-1][0] == 200
    finally:
        await server.databases.close_all()


def test_refused_at_load(tmp_path: Path) -> None:
    base = 'loadmodule "auth.so"\nloadmodule "auth_db.so"\nmodparam("auth_db", "db_url", "sqlite:///tmp/x.db")\n'
    cases = {
        'route { pv_www_authorize(""); }': "username_spec",
        'route { www_challenge("", "1"); }': "auth-int",
        'route { www_challenge("", "auth", "SHA-1"); }': "unknown digest algorithm",
        'route { www_authorize("", "users"); }': "subscriber",
        'route { db_is_to_authorized("uri"); }': "uri",
        'modparam("auth_db", "user_column", "user")\nroute { exit; }': "not a column",
        'modparam("auth_db", "load_credentials", "$avp(x)=nope")\nroute { exit; }': "not a column",
        'modparam("auth_db", "uri_user_column", "u")\nroute { exit; }': "not supported",
        'modparam("auth_db", "password_column_2", "ha1b")\nroute { exit; }': "'password_column_2' not found",
    }
    for i, (text, why) in enumerate(cases.items()):
        with pytest.raises(LoadError) as err:
            rr.load(tmp_path, base + text, name=f"r{i}.cfg")
        assert why in str(err.value), (text, str(err.value))
    with pytest.raises(LoadError) as err:
        rr.load(tmp_path, 'loadmodule "auth.so"\nloadmodule "auth_db.so"\n'
                          'route { www_authorize("", "subscriber"); }', name="nodb.cfg")
    assert "auth_db has no database" in str(err.value)
