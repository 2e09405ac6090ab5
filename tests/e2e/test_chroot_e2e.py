"""`chroot` (issue 22) over real processes: the server in a chroot (a tmp folder) as nobody:nogroup, with
1 and 2 worker processes, driven through everything it does after the chroot:

- PUBLISH, SUBSCRIBE and the NOTIFY over UDP, TCP, TLS, WS and WSS (the certificates are read at load,
  outside the new root); the SQLite database is created inside the new root (db_url
  sqlite:///data/presence.sqlite is <jail>/data/presence.sqlite);
- MI over HTTP (ps, get_statistics merged over the workers, the presence tables) and over the FIFO,
  whose path and reply_dir are inside the new root;
- SIGHUP: the script is read again at its path inside the new root (the cfg given at start was
  <jail>/etc/routescript.cfg, so /etc/routescript.cfg inside) and the new route answers;
- with 2 workers: a worker killed with SIGKILL is forked again by the supervisor - inside the chroot;
- SIGTERM: exit 0, the pid file (written inside) removed;
- and, through all of it, no module imported after the chroot: LateImportGuard's error line is absent.

The CI runs as root. As another user the server runs under `unshare --user --map-root-user` (a user
namespace where it is root and may chroot; user/group are left out there: nobody is not mapped in it);
the test is skipped only when neither works, saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from presence_e2e import ALL_PROTOS, SecureListeners, Srv, presence_cfg
from rs_e2e import ROOT, RunningServer, _env, free_port

from routescript.mi.client import call_fifo, call_http
from routescript.testing import pidf

LATE_IMPORT = "imported after the chroot"
STOP_BOUND = 25.0


def _unshare_works() -> bool:
    try:
        res = subprocess.run(["unshare", "--user", "--map-root-user", "/bin/true"], capture_output=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def how_to_chroot() -> tuple[list[str], bool]:
    """(the command prefix that lets the server chroot, whether it can switch to nobody too); skips the
    test with the reason when this machine offers neither root nor a user namespace."""
    if os.geteuid() == 0:
        return [], True
    if shutil.which("unshare") and _unshare_works():
        return ["unshare", "--user", "--map-root-user"], False
    pytest.skip("chroot needs root or CAP_SYS_CHROOT: not root, and `unshare --user --map-root-user` is not "
                "available here (user namespaces disabled?)")


class Jail:
    """The new root: data/ (the database), tmp/ (the MI FIFO and its replies), run/ (the pid file) and
    etc/routescript.cfg (the script, at its own path inside)."""

    def __init__(self, base: Path, as_nobody: bool) -> None:
        self.root = base / "jail"
        for sub, mode in (("data", 0o755), ("tmp", 0o1777), ("run", 0o755), ("etc", 0o755)):
            (self.root / sub).mkdir(parents=True)
            (self.root / sub).chmod(mode)
        self.root.chmod(0o755)
        if as_nobody:
            nobody = pwd.getpwnam("nobody").pw_uid
            for sub in ("data", "run"):
                os.chown(self.root / sub, nobody, -1)
        self.cfg = self.root / "etc" / "routescript.cfg"

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


def chroot_cfg(jail: Jail, port: int, http_port: int, workers: int, head: str,
               secure: SecureListeners) -> str:
    """examples/presence.cfg with its database inside the jail, tls/ws/wss listeners (their certificates
    outside: read at load), mi_fifo beside mi_http, OPTIONS answered "OK v1" (a reload changes it), and
    `head` (chroot, user, group...) first."""
    cfg = presence_cfg(jail.root.parent, port, db_url="sqlite:///data/presence.sqlite", workers=workers,
                       http_port=http_port, secure=secure, modparams={"mi_fifo": {"fifo_name": "/tmp/rs_fifo",
                                                                   "reply_dir": "/tmp/", "fifo_mode": 0o666}})
    text = cfg.read_text().replace('loadmodule "mi_http.so"',
                                   'loadmodule "mi_http.so"\nloadmodule "mi_fifo.so"')
    text = text.replace('sl_send_reply(200, "OK");', 'sl_send_reply(200, "OK v1");', 1)
    assert '"OK v1"' in text, "the example's OPTIONS answer moved"
    return head + "worker_restart_backoff = 1\n" + text


def call_fifo_in(jail: Jail, method: str, params: Any = None) -> Any:
    """One MI request over the FIFO at /tmp/rs_fifo inside the jail, by `routescript mi`'s own client: its
    reply FIFO in the jail's /tmp, handed to the server's user (nobody)."""
    return call_fifo(str(jail.path("/tmp/rs_fifo")), method, params, reply_dir=str(jail.path("/tmp")))


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def options(port: int) -> bytes:
    """One OPTIONS over UDP; the reply's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        unique = time.monotonic_ns()
        request = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ch{unique}\r\n"
                   f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ch-{unique}\r\n"
                   "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        s.sendto(request.encode(), ("127.0.0.1", port))
        data, _ = s.recvfrom(65536)
    return data.split(b"\r\n", 1)[0]


def answers_within(port: int, status: bytes, seconds: float) -> bool:
    """OPTIONS until the answer is `status` (a few, 0.1 s apart); whether it came within `seconds`."""
    deadline = time.monotonic() + seconds
    while options(port) != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def publish_and_subscribe(srv: Srv, proto: str, user: str) -> None:
    """PUBLISH `user`'s presence, SUBSCRIBE to it from another client: 200s and a NOTIFY with the PIDF."""
    async with await srv.client(user, proto) as pub_c, await srv.client(f"{user}-watcher", proto) as sub_c:
        uri = srv.uri(user)
        resp = await pub_c.send_request(pub_c.publish(uri, pidf(pub_c.aor, note=f"in {proto}"), expires=600))
        assert resp.status == 200, resp.to_bytes()
        sub = sub_c.subscribe(uri, expires=600)
        resp = await sub_c.send_request(sub)
        assert resp.status == 200, resp.to_bytes()
        notify = await sub_c.expect_request("NOTIFY", call_id=sub.call_id)
        await sub_c.reply(notify, 200)
        assert notify.header("Subscription-State") == "active;expires=600"
        assert f"<note>in {proto}</note>".encode() in notify.body, notify.body


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
async def test_server_in_a_chroot(tmp_path: Path, workers: int) -> None:
    """The whole exercise of the module docstring. 1 worker: `chroot` in the script, plain logs; 2
    workers: `--chroot` and `-w` on the command line, JSON logs (json's encoder after the chroot too)."""
    prefix, as_nobody = how_to_chroot()
    jail = Jail(tmp_path, as_nobody)
    port, http_port = free_port(), free_port()
    head = 'user = "nobody"\ngroup = "nogroup"\n' if as_nobody else ""
    flags = ["-P", "/run/routescript.pid"]
    if workers == 1:
        head += f'chroot = "{jail.root}"\n'
    else:
        head += 'stderror_log_format = "json"\n'
        flags += ["--chroot", str(jail.root), "-w", "/data"]
    secure = SecureListeners.make(tmp_path)
    jail.cfg.write_text(chroot_cfg(jail, port, http_port, workers, head, secure))
    jail.cfg.chmod(0o644)
    server = RunningServer(jail.cfg, tmp_path, flags=flags, prefix=prefix, stop_bound=STOP_BOUND)
    srv = Srv(server, port, secure)   # type: ignore[arg-type] - a RunningServer's log and wait_for
    try:
        server.wait_for("routescript started", timeout=30)
        # every process of the server is inside the new root, as nobody when root started it
        pids = [server.proc.pid, *(_children(server.proc.pid) if workers > 1 else [])]
        assert len(pids) == workers + (1 if workers > 1 else 0), pids
        for pid in pids:
            assert os.readlink(f"/proc/{pid}/root") == str(jail.root), pid
            # the working directory is inside too: wdir (-w) there, else the new root
            assert os.readlink(f"/proc/{pid}/cwd") == str(jail.path("/data" if workers > 1 else "/")), pid
            if as_nobody:
                assert _uid(pid) == pwd.getpwnam("nobody").pw_uid, pid
        assert jail.path("/run/routescript.pid").read_text().strip() == str(server.proc.pid)

        for proto in ALL_PROTOS:   # udp, tcp, tls, ws, wss
            await publish_and_subscribe(srv, proto, f"alice-{proto}")
        assert options(port) == b"SIP/2.0 200 OK v1"

        # MI over HTTP: the supervisor's own (ps), merged over the workers (statistics), a module's table
        url = f"http://127.0.0.1:{http_port}/mi"
        processes = call_http(url, "ps")["Processes"]
        if workers > 1:
            assert [row["PID"] for row in processes] == pids, processes
        stats = call_http(url, "get_statistics", {"statistics": ["all"]})
        # a PUBLISH and a SUBSCRIBE per transport and an OPTIONS; the answers to the NOTIFYs
        assert (stats["core:rcv_requests"], stats["core:rcv_replies"]) == (11, 5), stats
        phtable = call_http(url, "pres_phtable_list")
        assert "alice-udp" in json.dumps(phtable), phtable
        # MI over the FIFO inside the jail
        assert call_fifo_in(jail, "ps")["Processes"] == processes
        assert "alice-tcp" in json.dumps(call_fifo_in(jail, "pres_phtable_list"))

        # SIGHUP: the script is read again inside the new root
        jail.cfg.write_text(jail.cfg.read_text().replace('"OK v1"', '"OK v2"'))
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reloaded", timeout=20)
        # the supervisor logs its own commit; a worker applies ReloadCommit a moment later
        assert answers_within(port, b"SIP/2.0 200 OK v2", 10.0), server.log()

        if workers > 1:   # a worker killed: the supervisor forks it again, inside the chroot
            killed = _children(server.proc.pid)[1]
            os.kill(killed, signal.SIGKILL)
            server.wait_for("w1 restarted", timeout=30)
            new = [p for p in _children(server.proc.pid) if p != killed]
            assert len(new) == 2, new
            for pid in new:
                assert os.readlink(f"/proc/{pid}/root") == str(jail.root), pid
            await publish_and_subscribe(srv, "udp", "carol")
            assert options(port) == b"SIP/2.0 200 OK v2"
    finally:
        code = server.stop()
    text = server.log()
    assert code == 0, text
    assert LATE_IMPORT not in text, text
    assert "Traceback" not in text, text
    # the jail has no /etc/resolv.conf: said by each worker (the restarted one again), which runs on
    said = text.count("no DNS servers: /etc/resolv.conf gives none (no such file)")
    assert said == (1 if workers == 1 else workers + 1), text
    assert not jail.path("/run/routescript.pid").exists(), text
    # the database was made inside the jail (db_url sqlite:///data/presence.sqlite)
    with sqlite3.connect(jail.path("/data/presence.sqlite")) as db:
        users = {row[0] for row in db.execute("SELECT username FROM presentity")}
    assert {f"alice-{proto}" for proto in ALL_PROTOS} <= users, users


def test_chroot_not_allowed_is_a_clear_start_error(tmp_path: Path) -> None:
    """Without CAP_SYS_CHROOT - root with it dropped by setpriv, or any other user as it is - the start
    stops with EPERM said plainly, and the SIP port is closed again: exit 1."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("as root, setpriv(1) is needed to start a process without CAP_SYS_CHROOT")
        prefix = ["setpriv", "--inh-caps=-sys_chroot", "--bounding-set=-sys_chroot"]
    jail = tmp_path / "jail"
    jail.mkdir()
    port = free_port()
    cfg = tmp_path / "nochroot.cfg"
    cfg.write_text(f'log_level = 3\nchroot = "{jail}"\nsocket = udp:127.0.0.1:{port}\n'
                   'loadmodule "proto_udp.so"\nloadmodule "sl.so"\n'
                   'route {\n    sl_send_reply(200, "OK");\n}\n')
    res = subprocess.run([*prefix, sys.executable, "-m", "routescript", "run", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(), check=False)
    assert res.returncode == 1, res.stderr
    expected = (f"{cfg}:2:1: cannot chroot to {jail}: Operation not permitted "
                "(chroot needs root or CAP_SYS_CHROOT")
    assert expected in res.stderr, res.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))   # nothing of the server is left listening


def test_a_reload_reads_the_script_inside_the_new_root(tmp_path: Path) -> None:
    """A script given outside the jail: the start says that a reload will look for it at the same path
    inside; SIGHUP then is refused with the reason (the old script answers on), and once the file is
    there a SIGHUP loads it (OpenSIPS's reload_routes reads its cfg inside the chroot too)."""
    prefix, _ = how_to_chroot()
    jail = tmp_path / "jail"
    jail.mkdir()
    port = free_port()
    cfg = tmp_path / "outside.cfg"
    script = (f'log_level = 3\nchroot = "{jail}"\nsocket = udp:127.0.0.1:{port}\n'
              'loadmodule "proto_udp.so"\nloadmodule "sl.so"\nroute {\n    sl_send_reply(200, "OK v1");\n}\n')
    cfg.write_text(script)
    log_path = tmp_path / "reload.stderr"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "routescript", "run", str(cfg)], cwd=ROOT,
                                env=_env(), stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_logged(proc, log_path, "routescript started")
        warning = f"reads the script at {cfg} inside the chroot {jail}: no such file there"
        assert warning in log_path.read_text()
        proc.send_signal(signal.SIGHUP)
        _wait_logged(proc, log_path, f"cannot read {cfg}: No such file or directory")
        assert options(port) == b"SIP/2.0 200 OK v1"
        inside_copy = jail / str(cfg).lstrip("/")
        inside_copy.parent.mkdir(parents=True)
        inside_copy.write_text(script.replace("OK v1", "OK v2"))
        proc.send_signal(signal.SIGHUP)
        _wait_logged(proc, log_path, "reloaded")
        assert options(port) == b"SIP/2.0 200 OK v2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_BOUND) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert LATE_IMPORT not in log_path.read_text()


def _wait_logged(proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_path.read_text(errors="replace"):
            return
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{log_path.read_text()}")
