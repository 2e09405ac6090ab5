"""Who can reach MI, against real `routescript run` processes: httpd binds loopback by default, mi_http's
basic authentication (routescript hash-password, `routescript mi --user`, http://user:pass@host/mi
URLs, aiohttp and raw requests), the start-up warning when MI is open beyond loopback, log_level's
range, and `routescript mi ... | head` ending quietly."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import ROOT, RunningServer, free_port, routescript, run_server

from routescript.mi.client import MIClientError, MIReplyError, call_http

BASE_CFG = """
log_level = 3
socket = udp:127.0.0.1:{sip_port}
loadmodule "sl.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
modparam("httpd", "port", {http_port})
{extra}
route {{
    sl_send_reply(200, "OK");
}}
"""

PASSWORD = "s3cret:with colon"


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def write_cfg(tmp: Path, name: str, extra: str = "") -> tuple[Path, int]:
    http_port = free_port()
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(BASE_CFG.format(sip_port=free_port(), http_port=http_port, extra=extra))
    return cfg, http_port


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on TCP `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if int(hexport, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(addr)
    return found


@pytest.fixture(scope="module")
def hashed() -> str:
    """`routescript hash-password admin` with the password on standard input."""
    r = subprocess.run([sys.executable, "-m", "routescript", "hash-password", "admin"], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("admin:$scrypt$n=16384,r=8,p=1$")
    return line


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, hashed: str) -> Iterator[tuple[RunningServer, int]]:
    tmp = tmp_path_factory.mktemp("mi_auth")
    users = tmp / "mi_http.users"
    users.write_text("# operators\n" + hashed + "\n")
    cfg, http_port = write_cfg(tmp, "auth", f'modparam("mi_http", "auth_users_file", "{users}")')
    with run_server(cfg, tmp) as server:
        yield server, http_port


def test_httpd_listens_on_loopback_by_default(tmp_path: Path) -> None:
    cfg, http_port = write_cfg(tmp_path, "default")  # no modparam("httpd", "ip", ...)
    with run_server(cfg, tmp_path) as server:
        assert listening_addresses(http_port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not [::]
        assert call_http(f"http://127.0.0.1:{http_port}/mi", "version")["Server"].startswith("routescript")
        assert "beyond loopback" not in server.log()


def test_warning_when_mi_is_open_beyond_loopback(tmp_path: Path) -> None:
    cfg, _port = write_cfg(tmp_path, "open", 'modparam("httpd", "ip", "0.0.0.0")')
    with run_server(cfg, tmp_path) as server:
        server.wait_for("beyond loopback, without authentication")
        line = next(x for x in server.log().splitlines() if "beyond loopback" in x)
        assert "WARNING" in line and "0.0.0.0" in line


def test_no_warning_when_mi_has_users(tmp_path: Path, hashed: str) -> None:
    cfg, _port = write_cfg(tmp_path, "closed", f'modparam("httpd", "ip", "0.0.0.0")\n'
                                               f'modparam("mi_http", "auth_user", "{hashed}")')
    with run_server(cfg, tmp_path) as server:
        assert "beyond loopback" not in server.log()


async def test_basic_auth_refuses_and_accepts(auth_server: tuple[RunningServer, int]) -> None:
    server, port = auth_server
    url = f"http://127.0.0.1:{port}/mi"
    body = json.dumps({"jsonrpc": "2.0", "method": "subs_phtable_list", "id": 1})
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="routescript MI", charset="UTF-8"'
        wrong = {"Authorization": basic_authorization("admin", "not it")}
        async with session.post(url, data=body, headers=wrong) as resp:
            assert resp.status == 401
        nobody = {"Authorization": basic_authorization("nobody", PASSWORD)}
        async with session.post(url, data=body, headers=nobody) as resp:
            assert resp.status == 401
        async with session.post(url, data=body, headers={"Authorization": "Basic !!!"}) as resp:
            assert resp.status == 401
        good = {"Authorization": basic_authorization("admin", PASSWORD)}
        async with session.post(url, data=json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1}),
                                headers=good) as resp:
            assert resp.status == 200 and "Up time" in (await resp.json())["result"]
        # credentials in the URL, as curl and opensips-cli users write them
        quoted = PASSWORD.replace(":", "%3A").replace(" ", "%20")
        async with session.post(f"http://admin:{quoted}@127.0.0.1:{port}/mi",
                                data=json.dumps({"jsonrpc": "2.0", "method": "version", "id": 2})) as resp:
            assert resp.status == 200 and (await resp.json())["id"] == 2
    server.wait_for('refused credentials of user "admin" from 127.0.0.1')


async def test_cli_and_client_send_credentials(auth_server: tuple[RunningServer, int]) -> None:
    _server, port = auth_server
    url = f"http://127.0.0.1:{port}/mi"
    with pytest.raises(MIClientError, match="asks for a user and password"):
        await asyncio.to_thread(call_http, url, "which")
    with pytest.raises(MIClientError, match="wrong user or password"):
        await asyncio.to_thread(call_http, url, "which", user="admin", password="nope")
    names = await asyncio.to_thread(call_http, url, "which", user="admin", password=PASSWORD)
    assert "uptime" in names
    quoted = PASSWORD.replace(":", "%3A").replace(" ", "%20")
    in_url = f"http://admin:{quoted}@127.0.0.1:{port}/mi"
    assert "uptime" in await asyncio.to_thread(call_http, in_url, "which")

    env = dict(os.environ, ROUTESCRIPT_MI_PASSWORD=PASSWORD)
    r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "routescript", "mi", "--url", url,
                                                 "--user", "admin", "uptime"],
                                capture_output=True, text=True, timeout=30, cwd=ROOT, env=env, check=False)
    assert r.returncode == 0 and "Up time" in json.loads(r.stdout), r.stderr
    r = await asyncio.to_thread(routescript, "mi", "--url", url, "uptime")
    assert r.returncode == 1 and "401" in r.stderr


def test_bad_users_are_refused_at_load(tmp_path: Path) -> None:
    cfg, _ = write_cfg(tmp_path, "bad", 'modparam("mi_http", "auth_user", "admin:plaintext")')
    r = routescript("check", str(cfg))
    assert r.returncode == 1 and "$scrypt$" in r.stderr
    cfg, _ = write_cfg(tmp_path, "nofile", f'modparam("mi_http", "auth_users_file", "{tmp_path}/none")')
    r = routescript("check", str(cfg))
    assert r.returncode == 1 and "cannot read" in r.stderr


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    tmp = tmp_path_factory.mktemp("mi_open")
    cfg, http_port = write_cfg(tmp, "plain")
    with run_server(cfg, tmp) as server:
        yield server, f"http://127.0.0.1:{http_port}/mi"


@pytest.mark.parametrize("level", [99999999999999999999, 5, -4, -99999999999999999999, "-7"])
def test_log_level_out_of_range_is_refused(open_server: tuple[RunningServer, str], level: object) -> None:
    _server, url = open_server
    for command in ("log_level", "xlog_level"):
        with pytest.raises(MIReplyError) as err:
            call_http(url, command, [level])
        assert err.value.code == -32602, err.value
    # the level in force is unchanged, and the whole range is accepted
    assert call_http(url, "log_level")["Processes"][0]["Log level"] == 3
    for good in (-3, 4, 3):
        assert call_http(url, "log_level", [good]) == {"New global log level": good}
    assert call_http(url, "xlog_level", [-3]) == {"New xLog level": -3}


def test_cli_into_a_closed_pipe_ends_quietly(open_server: tuple[RunningServer, str]) -> None:
    """`routescript mi which | head -0`: the reader is gone before the reply is printed."""
    _server, url = open_server
    proc = subprocess.Popen([sys.executable, "-m", "routescript", "mi", "--url", url, "which"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reading end of the pipe: the CLI's write gets EPIPE
    deadline = time.monotonic() + 30
    err = proc.stderr.read()
    proc.wait(max(1.0, deadline - time.monotonic()))
    assert err == b"", err.decode(errors="replace")
    assert proc.returncode == 141  # 128 + SIGPIPE, as a C tool killed by SIGPIPE shows in the shell


def test_mi_max_walks_below_one_is_refused(tmp_path: Path) -> None:
    cfg, _ = write_cfg(tmp_path, "walks")
    cfg.write_text("mi_max_walks = 0\n" + cfg.read_text())
    r = routescript("check", str(cfg))
    assert r.returncode == 1 and "core parameter 'mi_max_walks' must be at least 1, got 0" in r.stderr
