"""OpenSIPS's own sample scripts (every .cfg of its source tree): their core parameters load here, or are
refused with a message naming the parameter and why, at its line (issue 22). Skipped when the OpenSIPS
source mirror is not on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from routescript.core import _script
from routescript.core.config import apply_globals, unknown_globals
from routescript.core.module import ConfigError
from routescript.script import ScriptError, parse_file

OPENSIPS = Path("/work/.mirror/OpenSIPS+opensips/repo")

# sample -> the core parameters refused (or unknown to OpenSIPS 3.4) in it, each rightly:
EXPECTED = {
    "modules/imc/doc/imc.cfg": {"port"},                          # 2.x: the port is in socket=
    "modules/jabber/doc/jabberx.cfg": {"port", "fork"},           # fork = yes: we never daemonize
    "modules/mangler/mangler.cfg": {"port", "mhomed"},            # mhomed = yes: not built
    "modules/pi_http/samples/opensips-pi_http.cfg": {"pi_framework"},   # OpenSIPS 4.x
    "modules/sipcapture/examples/opensips.cfg": {"disable_tcp"},  # 2.x
    "utils/profile/profile.cfg": {"port"},
}
# samples our grammar does not read (their problems are the script checker's, not the core parameters')
UNREADABLE = {"modules/jabber/doc/jabber.cfg", "modules/ldap/etc/ldap.cfg",
              "modules/osp/etc/sample-osp-opensips.cfg"}


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(OPENSIPS), *args], capture_output=True, text=True,
                          check=True).stdout


def _samples() -> list[str]:
    if not (OPENSIPS / "HEAD").exists() and not (OPENSIPS / ".git").exists():
        return []
    return sorted(n for n in _git("ls-tree", "-r", "HEAD", "--name-only").split() if n.endswith(".cfg"))


SAMPLES = _samples()


def _problems(path: Path) -> list[tuple[str, ConfigError | str]]:
    """(parameter, error) for every core parameter of the script that does not load."""
    globals_ = _script.globals_of(parse_file(path), str(path))
    found: list[tuple[str, ConfigError | str]] = []
    by_pos = {pos: name for name, _value, pos in globals_}
    for message, pos in unknown_globals(globals_):
        found.append((by_pos[pos], f"{pos[0]}:{pos[1]}:{pos[2]}: {message}" if pos else message))
    errors: list[ConfigError] = []
    apply_globals(globals_, errors)
    found += [(by_pos.get(e.pos, "?") if e.pos else "?", e) for e in errors]
    return found


@pytest.mark.skipif(not SAMPLES, reason=f"the OpenSIPS source mirror {OPENSIPS} is not here")
@pytest.mark.parametrize("sample", SAMPLES or ["none"])
def test_sample_core_parameters_load_or_are_refused_with_the_reason(sample: str, tmp_path: Path) -> None:
    path = tmp_path / sample.replace("/", "__")
    path.write_text(_git("show", f"HEAD:{sample}"))
    if sample in UNREADABLE:
        with pytest.raises(ScriptError):
            parse_file(path)
        return
    problems = _problems(path)
    assert {name for name, _ in problems} == EXPECTED.get(sample, set())
    for name, error in problems:
        text = str(error)
        assert text.startswith(f"{path}:"), text          # file:line:col
        assert name in text and len(text) > len(f"{path}:1:1: ") + len(name) + 20, text   # names it, says why
