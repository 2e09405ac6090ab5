"""The reload split for worker processes (docs/workers.md section 6): ConfigLoader.prepare_reload
compiles aside without swapping, commit_reload swaps; the files' SHA-256 tells two reads of the script
apart; a worker refuses to prepare a script whose files differ from what the supervisor checked, and
commits or drops only what it prepared."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from routescript.core.loading import PreparedReload, files_sha256
from routescript.core.server import Server
from routescript.workers.child import _commit_reload, _prepare_reload
from routescript.workers.control import Prepared, ReloadPrepare


def _load(tmp_path: Path, body: str = 'route { xlog("one\\n"); exit; }\n') -> tuple[Server, Path]:
    (tmp_path / "inc.cfg").write_text(body)
    cfg = tmp_path / "main.cfg"
    cfg.write_text('loadmodule "xlog.so"\ninclude_file "inc.cfg"\n')
    server = Server()
    server.load(str(cfg))
    return server, tmp_path / "inc.cfg"


def test_prepare_compiles_aside_and_commit_swaps(tmp_path: Path) -> None:
    server, inc = _load(tmp_path)
    old = server.routes.script
    inc.write_text('route { xlog("two\\n"); exit; }\n')
    prepared = server.loader.prepare_reload()
    assert prepared.errors == [] and prepared.loaded is not None
    assert server.routes.script is old   # nothing swapped yet
    server.loader.commit_reload(prepared)
    assert server.routes.script is prepared.loaded.compiled and server.loaded is prepared.loaded


def test_a_failed_prepare_says_why_and_keeps_the_old_script(tmp_path: Path) -> None:
    server, inc = _load(tmp_path)
    old = server.routes.script
    inc.write_text("route { nosuchfunction(); }\n")
    prepared = server.loader.prepare_reload()
    assert prepared.loaded is None and any("nosuchfunction" in str(d) for d in prepared.errors)
    assert server.routes.script is old
    with pytest.raises(AssertionError):
        server.loader.commit_reload(prepared)


async def test_reload_routes_in_one_process_is_prepare_then_commit(tmp_path: Path) -> None:
    server, inc = _load(tmp_path)
    inc.write_text('route { xlog("two\\n"); exit; }\n')
    old = server.routes.script
    assert await server.reload_routes() == []
    assert server.routes.script is not old
    inc.write_text("route { nosuchfunction(); }\n")
    kept = server.routes.script
    assert await server.reload_routes() != [] and server.routes.script is kept


def test_the_files_hash_covers_the_included_files(tmp_path: Path) -> None:
    server, inc = _load(tmp_path)
    first = server.loader.prepare_reload().files_sha256
    assert first == server.loader.prepare_reload().files_sha256   # same files, same hash
    assert server.loaded is not None and first == files_sha256(server.loaded.ast)
    inc.write_text('route { xlog("one\\n");  exit; }\n')   # one space more, in the included file
    assert server.loader.prepare_reload().files_sha256 != first


def test_a_worker_refuses_files_other_than_the_supervisors(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    server, inc = _load(tmp_path)
    supervisors = server.loader.prepare_reload().files_sha256
    inc.write_text('route { xlog("changed in between\\n"); exit; }\n')   # edited after the supervisor read
    staged: dict[int, PreparedReload] = {}
    with caplog.at_level(logging.ERROR):
        answer = _prepare_reload(server, 1, ReloadPrepare(7, supervisors), staged)
    assert answer.gen == 7 and not answer.ok and "changed after the supervisor read them" in answer.error
    assert staged == {} and "w1: reload 7 refused" in caplog.text


def test_a_worker_commits_what_it_prepared_and_only_that(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    server, inc = _load(tmp_path)
    inc.write_text('route { xlog("two\\n"); exit; }\n')
    old = server.routes.script
    sha = server.loader.prepare_reload().files_sha256
    staged: dict[int, PreparedReload] = {}
    assert _prepare_reload(server, 0, ReloadPrepare(3, sha), staged) == Prepared(3, True)
    assert server.routes.script is old and list(staged) == [3]
    with caplog.at_level(logging.ERROR):
        _commit_reload(server, 0, 4, staged)
    assert server.routes.script is old and "ReloadCommit 4 without its ReloadPrepare" in caplog.text
    _commit_reload(server, 0, 3, staged)
    assert server.routes.script is not old and staged == {}


def test_a_worker_reports_a_script_that_does_not_compile(tmp_path: Path) -> None:
    server, inc = _load(tmp_path)
    inc.write_text("route { nosuchfunction(); }\n")
    answer = _prepare_reload(server, 1, ReloadPrepare(9, "whatever"), {})
    assert not answer.ok and "nosuchfunction" in answer.error
