"""The operator's kit, in process (issue 22, docs/operations.md): $env(NAME) substitution, the command
line's overrides, the pid file, sd_notify's environment, the metrics' parts, the log settings."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from routescript.core.config import apply_globals
from routescript.core.environ import expand_env
from routescript.core.health import LoopLagMonitor, open_files, rss_bytes
from routescript.core.loading import LoadError
from routescript.core.log import JsonFormatter, LogSettings, current_call_id
from routescript.core.module import ConfigError
from routescript.core.overrides import RunOptions, apply_overrides
from routescript.core.pidfile import PidFile, PidFileError
from routescript.core.sdnotify import SystemdNotifier
from routescript.core.server import Server
from routescript.db import open_database
from routescript.db.errors import DatabaseError
from routescript.db.metrics import QUERY_METRICS, WINDOW, WindowMax


# ------------------------------------------------------------------ $env(NAME)
def test_expand_env_replaces_every_reference() -> None:
    env = {"USER_": "rs", "PASS": "s3cr$t(x)"}
    assert expand_env("postgres://$env(USER_):$env(PASS)@db/rs", env) == "postgres://rs:s3cr$t(x)@db/rs"
    assert expand_env("no reference, ${PASS} is left", env) == "no reference, ${PASS} is left"
    assert expand_env(42, env) == 42


@pytest.mark.parametrize(("text", "message"), [
    ("$env(MISSING)", "$env(MISSING): environment variable MISSING is not set"),
    ("$env(1BAD)", "$env(1BAD): not an environment variable name"),
    ("$env()", "$env(): not an environment variable name"),
])
def test_expand_env_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        expand_env(text, {})


def test_env_in_a_string_core_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_DB_URL", "sqlite:///tmp/x.sqlite")
    cfg, _ = apply_globals([("db_default_url", "$env(RS_DB_URL)", ("a.cfg", 3, 1))])
    assert cfg.get("db_default_url") == "sqlite:///tmp/x.sqlite"
    monkeypatch.delenv("RS_DB_URL")
    with pytest.raises(ConfigError) as err:
        apply_globals([("db_default_url", "$env(RS_DB_URL)", ("a.cfg", 3, 1))])
    assert err.value.pos == ("a.cfg", 3, 1)
    assert "environment variable RS_DB_URL is not set" in err.value.message


def test_env_in_modparam_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "env.cfg"
    cfg.write_text('socket = udp:127.0.0.1:0\nloadmodule "sl.so"\nloadmodule "tm.so"\n'
                   'modparam("tm", "fr_timeout", "$env(RS_FR)")\nroute { exit; }\n')
    monkeypatch.setenv("RS_FR", "7")
    server = Server()
    server.load(str(cfg))
    assert server.modules.get("tm").param("fr_timeout") == 7
    monkeypatch.delenv("RS_FR")
    with pytest.raises(LoadError) as err:
        Server().load(str(cfg))
    assert any(str(d).startswith(f"{cfg}:4:1: modparam(\"tm\", \"fr_timeout\"): $env(RS_FR): environment "
                                 "variable RS_FR is not set\n") for d in err.value.diagnostics), \
        [str(d) for d in err.value.diagnostics]


# ------------------------------------------------------------------ command-line overrides
def test_overrides_win_over_the_script() -> None:
    cfg, _ = apply_globals([("log_level", 1, None), ("debug", 1, None), ("pid_file", "/a", ("a", 1, 1))])
    apply_overrides(cfg, RunOptions(pid_file="/run/rs.pid", log_level="L_DBG",
                                    listen=("tcp:127.0.0.1:5070",)))
    assert cfg.log_level == 4 and "debug" not in cfg.values
    assert cfg.get("pid_file") == "/run/rs.pid" and "pid_file" not in cfg.positions
    assert [s.name for s in cfg.sockets] == ["tcp:127.0.0.1:5070"]


@pytest.mark.parametrize(("options", "message"), [
    (RunOptions(log_level="9"), "--log-level 9: log level 9 out of range"),
    (RunOptions(user="no-such-user-rs22"), "-u no-such-user-rs22: no such user"),
    (RunOptions(pid_file=""), "-P : the pid file needs a path"),
    (RunOptions(listen=("udp:host:99999",)),
     "--listen udp:host:99999: socket \"udp:host:99999\": port 99999"),
])
def test_bad_overrides_name_their_flag(options: RunOptions, message: str) -> None:
    cfg, _ = apply_globals([])
    with pytest.raises(LoadError) as err:
        apply_overrides(cfg, options)
    assert message in str(err.value.diagnostics[0])


# ------------------------------------------------------------------ pid file
def test_pid_file_write_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "rs.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    pid_file.remove()
    assert not path.exists()


def test_pid_file_of_another_live_process_refuses(tmp_path: Path) -> None:
    path = tmp_path / "rs.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(PidFileError, match=f"process {os.getppid()} is running"):
        PidFile(str(path)).write()


def test_pid_file_replaced_by_another_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "rs.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    path.write_text("1\n")    # a newer server took it over
    pid_file.remove()
    assert path.read_text() == "1\n"


def test_pid_file_in_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PidFileError, match="cannot write pid file"):
        PidFile(str(tmp_path / "no" / "rs.pid")).write()


# ------------------------------------------------------------------ sd_notify
def test_notifier_reads_and_removes_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@rs-test", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid()),
           "X": "1"}
    notifier = SystemdNotifier.from_environment(env)
    assert notifier.address == "@rs-test" and notifier.watchdog_interval == 1.5
    assert env == {"X": "1"}
    other = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100",
                                              "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert SystemdNotifier.from_environment({}).address is None


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"rs-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        notifier = SystemdNotifier("@" + name)
        notifier.stopping()
        assert systemd.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()


def test_notifier_survives_a_missing_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    SystemdNotifier(str(tmp_path / "gone")).send("READY=1")
    assert "sd_notify READY=1" in caplog.text


# ------------------------------------------------------------------ metrics
def test_window_max_forgets_after_two_windows() -> None:
    now = [0.0]
    worst = WindowMax(lambda: now[0])
    worst.add(0.3)
    worst.add(0.1)
    assert worst.value == 0.3
    now[0] = WINDOW + 1          # the next window: the last one's worst is still shown
    worst.add(0.05)
    assert worst.value == 0.3
    now[0] = 2 * WINDOW + 2      # a window later: only the newer
    assert worst.value == 0.05
    now[0] = 5 * WINDOW          # nothing for long: nothing
    assert worst.value == 0.0


def test_loop_lag_statistics_read_the_monitor() -> None:
    server = Server()
    assert isinstance(server.loop_lag, LoopLagMonitor)
    server.loop_lag.record(0.25)
    server.loop_lag.record(0.01)
    assert server.statistics.get("process:loop_lag_ms").value == 10
    assert server.statistics.get("process:loop_lag_max_ms").value == 250


def test_process_statistics() -> None:
    server = Server()
    assert server.statistics.get("process:rss_bytes").value == rss_bytes() > 1_000_000
    with open(os.devnull) as _held:
        opened = open_files()
    assert opened > 3
    assert server.statistics.get("process:open_files").value < opened   # the file above is closed again


async def test_database_statistics(tmp_path: Path) -> None:
    """Statements are counted with their time; one that fails (its table dropped behind the server's
    back) is an error too."""
    import sqlite3

    server = Server()
    stat = server.statistics.get
    path = tmp_path / "m.sqlite"
    queries, errors = stat("db:queries").value, stat("db:query_errors").value
    db = await open_database(f"sqlite://{path}")
    try:
        await db.ensure_schema(["presentity"])
        assert await db.query("presentity") == []
        assert stat("db:queries").value > queries
        assert stat("db:query_errors").value == errors
        assert stat("db:query_time_ms").value >= 0 and stat("db:query_max_ms").value >= 0
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE presentity")
        ran = QUERY_METRICS.queries
        with pytest.raises(DatabaseError):
            await db.query("presentity")
        assert QUERY_METRICS.queries == ran + 1
        assert stat("db:query_errors").value == errors + 1
    finally:
        await db.close()


# ------------------------------------------------------------------ logs
def test_log_settings_of_the_opensips_names() -> None:
    cfg, _ = apply_globals([("log_stderror", False, None), ("log_facility", "LOG_LOCAL3", None),
                            ("log_name", "edge", None), ("stderror_log_format", "json", None)])
    settings = LogSettings.of(cfg)
    assert (settings.stderr, settings.syslog, settings.facility, settings.syslog_name) == \
        (False, True, "LOG_LOCAL3", "edge")
    assert settings.stderr_format == "json"
    explicit, _ = apply_globals([("log_stderror", False, None), ("syslog_enabled", False, None)])
    assert not LogSettings.of(explicit).syslog


def test_bad_facility_is_refused() -> None:
    with pytest.raises(ConfigError, match="bad facility \"LOG_NOPE\""):
        apply_globals([("syslog_facility", "LOG_NOPE", None)])


def test_json_formatter_carries_the_call_id() -> None:
    import json

    record = logging.LogRecord("routescript.presence", logging.WARNING, __file__, 1, "a \"quoted\" %s",
                               ("x",), None)
    token = current_call_id.set("abc@host")
    try:
        entry = json.loads(JsonFormatter().format(record))
    finally:
        current_call_id.reset(token)
    assert entry["message"] == 'a "quoted" x' and entry["call_id"] == "abc@host"
    assert entry["level"] == "WARNING" and entry["module"] == "routescript.presence"
