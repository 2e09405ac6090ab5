"""`chroot`'s parts in process (routescript/core/chroot.py; the server in a chroot:
tests/e2e/test_chroot_e2e.py): the directory checked at load, paths seen from inside and outside, what
is imported before the chroot, LateImportGuard's error line, the identity looked up before, sd_notify
connected before, mi_fifo's and wdir's checks inside the new root, `routescript run --chroot` given to
the load, `routescript mi --config` finding a chrooted FIFO."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from routescript.core.chroot import (
    ChrootError,
    LateImportGuard,
    check_chroot_dir,
    declared_dependencies,
    enter_chroot,
    inside,
    outside,
    package_of,
    preload_imports,
)
from routescript.core.config import apply_globals
from routescript.core.module import ConfigError
from routescript.core.overrides import RunOptions
from routescript.core.privileges import run_as
from routescript.core.sdnotify import SystemdNotifier
from routescript.core.server import Server, load_for_run
from routescript.mi.client import endpoint_from_config

P = ("a.cfg", 1, 1)


# ------------------------------------------------------------------ the directory and its paths
def test_check_chroot_dir(tmp_path: Path) -> None:
    assert check_chroot_dir(str(tmp_path)) == str(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ChrootError, match=r'chroot directory ".*/file" is not a directory'):
        check_chroot_dir(str(tmp_path / "file"))
    with pytest.raises(ChrootError, match=r'chroot directory ".*/nowhere" does not exist'):
        check_chroot_dir(str(tmp_path / "nowhere"))


def test_paths_inside_and_outside() -> None:
    # a file read before the chroot, found after it: under the new root it loses the prefix
    assert inside("/srv/jail", "/srv/jail/etc/rs.cfg") == "/etc/rs.cfg"
    assert inside("/srv/jail/", "/srv/jail") == "/"
    assert inside("/srv/jail", "/srv/jailbreak/rs.cfg") == "/srv/jailbreak/rs.cfg"   # not under it
    assert inside("/srv/jail", "/etc/rs.cfg") == "/etc/rs.cfg"                       # the same path inside
    # a path opened after the chroot, seen from outside (the checks at load)
    assert outside("/srv/jail", "/tmp/fifo") == "/srv/jail/tmp/fifo"
    assert outside("/srv/jail", "data") == "/srv/jail/data"
    assert outside("", "/tmp/fifo") == "/tmp/fifo"


def test_chroot_and_wdir_are_checked_at_load(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    cfg, _ = apply_globals([("chroot", str(tmp_path), P), ("wdir", "/work", P)])
    assert cfg.get("chroot") == str(tmp_path)
    errors: list[ConfigError] = []
    apply_globals([("chroot", str(tmp_path), P), ("wdir", str(tmp_path / "work"), ("a.cfg", 2, 1))], errors)
    # wdir is entered after the chroot: an outside path is not there inside
    assert [(e.message, e.pos) for e in errors] == [
        (f'wdir: no such directory "{tmp_path / "work"}" inside the chroot {tmp_path}', ("a.cfg", 2, 1))]
    errors = []
    apply_globals([("chroot", str(tmp_path / "none"), ("a.cfg", 3, 1))], errors)
    assert [(e.message, e.pos) for e in errors] == [
        (f'chroot directory "{tmp_path / "none"}" does not exist', ("a.cfg", 3, 1))]


# ------------------------------------------------------------------ imports
def test_preload_imports_what_the_server_imports_lazily() -> None:
    """Modules the server (or a library it uses) imports in a function body, or by name at run time,
    are in sys.modules afterwards; names that cannot be imported here are listed as absent."""
    done = preload_imports(["routescript", "routescript.modules.presence", "routescript.modules.httpd"])
    lazy = ["routescript.mi.aggregate", "routescript.db.sqlite", "routescript.modules.presence.mi",
            "dns.rdtypes.ANY.SOA", "dns._asyncio_backend", "encodings.idna", "stringprep", "_strptime",
            "logging.handlers", "json.decoder", "ssl", "aiohttp.web", "sqlite3.dbapi2"]
    assert [name for name in lazy if name not in sys.modules] == []
    assert "encodings.mbcs" in done.absent   # Windows only
    # neither the test runner's parts nor every module routescript has are imported for a server
    assert not any(name.startswith("routescript.testing") for name in done.absent)
    assert done.modules == len(sys.modules) and done.seconds > 0


def test_declared_dependencies_are_the_runtime_ones() -> None:
    deps = declared_dependencies()
    assert {"lark", "dns", "aiohttp", "aiosqlite"} <= deps
    assert not deps & {"pytest", "hypothesis", "mypy", "ruff", "routescript"}


def test_package_of() -> None:
    assert package_of("routescript.modules.presence.module") == "routescript.modules.presence"
    assert package_of("acme_sip.module") == "acme_sip"


def test_late_import_guard_logs_once_and_fails(caplog: pytest.LogCaptureFixture) -> None:
    """A module imported after the chroot: one error line naming it, then ModuleNotFoundError (the
    Python installation is not inside). A name absent before the chroot fails quietly."""
    for name in ("tabnanny", "no_such_module_rs22"):
        sys.modules.pop(name, None)
    guard = LateImportGuard("/srv/jail", absent={"no_such_module_rs22"})
    guard.install()
    try:
        with caplog.at_level(logging.ERROR, "routescript.core"):
            for _ in range(2):
                with pytest.raises(ModuleNotFoundError, match="imported after the chroot to /srv/jail"):
                    import tabnanny  # noqa: F401
            with pytest.raises(ModuleNotFoundError):
                import no_such_module_rs22  # type: ignore[import-not-found]  # noqa: F401
        import os.path  # noqa: F401 - already imported: never reaches the guard
        builtin = next((n for n in ("xxsubtype", "_symtable", "_tracemalloc") if n not in sys.modules), None)
        if builtin is not None:   # compiled into the interpreter: no file needed, so let through
            assert importlib.import_module(builtin).__name__ == builtin
    finally:
        sys.meta_path.remove(guard)
    lines = [r.getMessage() for r in caplog.records if "imported after the chroot" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("module tabnanny imported after the chroot to /srv/jail")


def test_enter_chroot_without_the_right_says_who_may() -> None:
    """EPERM: run in a child that gave up root first (the message, not the chroot, is under test)."""
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child reports through its exit status
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            enter_chroot("/tmp")
        except ChrootError as exc:
            said = "Operation not permitted (chroot needs root or CAP_SYS_CHROOT; running as uid 65534)"
            code = 0 if said in str(exc) else 2
        except BaseException:   # noqa: BLE001
            code = 4
        os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root (the EPERM text is then checked by the e2e test)")
    assert os.waitstatus_to_exitcode(status) == 0


# ------------------------------------------------------------------ what must be done before the chroot
def test_the_identity_and_its_groups_are_looked_up_before(tmp_path: Path) -> None:
    """/etc/passwd and /etc/group need not be inside: the account and its supplementary groups are
    looked up when the name is (run_as), and the switch uses those numbers."""
    target = run_as("root", "")
    assert target is not None and target.uid == 0 and 0 in target.groups
    only_group = run_as("", "0")
    assert only_group is not None and only_group.groups == (0,)


def test_sd_notify_is_connected_before_the_chroot(tmp_path: Path) -> None:
    """connect() then send(): the datagrams still arrive when the socket's path is gone from view (as
    it is after a chroot); here the path is removed instead."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(2)
        notifier = SystemdNotifier(str(path))
        notifier.connect()
        path.unlink()
        notifier.ready("listening")
        assert systemd.recv(4096).startswith(b"READY=1\n")
        notifier.close()


# ------------------------------------------------------------------ loading with a chroot
def _cfg(tmp_path: Path, head: str, extra: str = "") -> Path:
    cfg = tmp_path / "rs.cfg"
    cfg.write_text(f"""{head}socket = udp:127.0.0.1:5099
loadmodule "proto_udp.so"
loadmodule "sl.so"
{extra}
route {{
    sl_send_reply(200, "OK");
}}
""")
    return cfg


FIFO = 'loadmodule "mi_fifo.so"\nmodparam("mi_fifo", "fifo_name", "/tmp/rs_fifo")\n'


def test_mi_fifo_paths_are_checked_inside_the_chroot(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    with pytest.raises(Exception, match=r"no directory /tmp inside the chroot"):
        Server().load(str(_cfg(tmp_path, f'chroot = "{jail}"\n', FIFO)))
    (jail / "tmp").mkdir()
    Server().load(str(_cfg(tmp_path, f'chroot = "{jail}"\n', FIFO)))
    # `routescript mi --config` finds the FIFO and the reply folder from outside
    assert endpoint_from_config(str(tmp_path / "rs.cfg")) == ("fifo", f"{jail}/tmp/rs_fifo", f"{jail}/tmp/")


def test_the_command_line_chroot_is_given_to_the_load(tmp_path: Path) -> None:
    """--chroot takes the script's place before the modules' checks (mi_fifo's FIFO folder is looked for
    inside it); a bad directory is a load error naming it."""
    jail = tmp_path / "jail"
    (jail / "tmp").mkdir(parents=True)
    cfg = _cfg(tmp_path, 'chroot = "/no-such-dir-rs22"\n', FIFO)
    server = load_for_run(str(cfg), RunOptions(chroot=str(jail)))
    assert server.config.get("chroot") == str(jail) and "chroot" not in server.config.positions
    with pytest.raises(Exception, match=r'chroot directory "/no-such-dir-rs22" does not exist'):
        load_for_run(str(_cfg(tmp_path, "", FIFO)), RunOptions(chroot="/no-such-dir-rs22"))


def _imported_names(folders: list[Path]) -> set[str]:
    """Every module name an `import` or `from ... import` statement names in the .py files below
    `folders`, wherever it is (a function body included); relative imports left out (their package is
    walked whole)."""
    import ast

    names: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            if "testing" in path.relative_to(folder).parts:   # the test runner's: never in a server
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module)
    return names


def test_every_module_our_code_imports_anywhere_is_preloaded() -> None:
    """A new `import x` in a function body of routescript or a module (run after the chroot) fails here
    when preload_imports does not import x before: the standard library's and the dependencies' names
    must be in sys.modules after it (or known absent: an optional library), routescript's own too."""
    root = Path(__file__).resolve().parents[2]
    names = _imported_names([root / "routescript", root / "modules"])
    names = {n for n in names if not n.startswith("routescript.testing")}
    modules = sorted(p.name for p in (root / "modules").iterdir() if (p / "__init__.py").exists())
    done = preload_imports(["routescript", *(f"routescript.modules.{m}" for m in modules)])
    missing = sorted(n for n in names
                     if n not in sys.modules and n not in done.absent and n.split(".")[0] not in done.absent
                     and not _is_attribute(n))
    assert missing == [], f"imported somewhere by our code, not by preload_imports: {missing}"


def _is_attribute(name: str) -> bool:
    """`from a import b` where b is a name in a (not a module): not an import of a module."""
    parent, _, leaf = name.rpartition(".")
    return bool(parent) and parent in sys.modules and hasattr(sys.modules[parent], leaf) and \
        not hasattr(getattr(sys.modules[parent], leaf), "__spec__")


def test_the_command_line_wdir_replaces_the_script_s(tmp_path: Path) -> None:
    """-w/--wdir (OpenSIPS -w) takes the place of `wdir`/`workdir`, checked inside --chroot's new root;
    a folder missing there is a load error naming it, without the script's position."""
    jail = tmp_path / "jail"
    (jail / "work").mkdir(parents=True)
    cfg = _cfg(tmp_path, f'workdir = "{tmp_path}"\n')
    server = load_for_run(str(cfg), RunOptions(chroot=str(jail), wdir="/work"))
    assert server.config.get("wdir") == "/work" and "wdir" not in server.config.positions
    with pytest.raises(Exception, match=rf'^wdir: no such directory "/nowhere" inside the chroot {jail}$'):
        load_for_run(str(cfg), RunOptions(chroot=str(jail), wdir="/nowhere"))
