"""A scenario file is checked like a script: unknown keys, bad templates and impossible
expectations are `file:line:col` messages with the line and a caret, never tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.cli import main
from routescript.testing.scenario import ScenarioError, load_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPTIONS = "scenarios:\n  - name: a\n    steps:\n      - send: {from: a, request: OPTIONS, ruri: 'sip:x@y'}\n"


def _file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.test.yaml"
    path.write_text(f"script: {EXAMPLES / 'hello.cfg'}\n" + body)
    return path


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load_file(str(_file(tmp_path, body)))
    return str(info.value)


def test_unknown_key_is_reported_at_its_position(tmp_path: Path) -> None:
    text = _error(tmp_path, "scenarios:\n  - name: a\n    steps:\n      - send: {from: a, request: OPTIONS, "
                            "ruri: 'sip:x@y', heders: {}}\n")
    first = text.splitlines()[0]
    assert first.startswith(f"{tmp_path}/s.test.yaml:5:60: unknown key 'heders' in send (known: ")
    assert text.splitlines()[2].strip() == "^"


def test_unknown_step_kind(tmp_path: Path) -> None:
    text = _error(tmp_path, "scenarios:\n  - name: a\n    steps:\n      - sned: {}\n")
    assert ":5:9: unknown key 'sned' in a step" in text


def test_missing_template(tmp_path: Path) -> None:
    text = _error(tmp_path, "scenarios:\n  - name: a\n    steps:\n      - send: {from: a, request: OPTIONS, "
                            "ruri: 'sip:x@y', use: nope}\n")
    assert ":5:65: no template named 'nope'" in text


def test_variable_used_before_any_capture_is_impossible(tmp_path: Path) -> None:
    text = _error(tmp_path, "scenarios:\n  - name: a\n    steps:\n      - send: {from: a, request: OPTIONS, "
                            "ruri: 'sip:x@y', headers: {X: '$var(etag)'}}\n")
    assert "impossible: $var(etag) is used before any step captures it" in text


def test_reply_for_a_ua_that_sent_nothing_is_impossible(tmp_path: Path) -> None:
    text = _error(tmp_path, "uas: {bob: {}}\nscenarios:\n  - name: a\n    steps:\n"
                            "      - expect: {to: bob, reply: 200}\n")
    assert ":6:34: impossible: bob has sent no request before this step" in text


def test_bad_values(tmp_path: Path) -> None:
    assert "reply should be a status such as 200 or a class such as 2xx" in _error(
        tmp_path, OPTIONS + "      - expect: {reply: 20}\n")
    assert "should look like 30s, 500ms, 10m or 1h" in _error(
        tmp_path, "scenarios:\n  - name: a\n    steps:\n      - advance: soon\n")
    assert "bad regex" in _error(
        tmp_path, "scenarios:\n  - name: a\n    steps:\n      - log: {regex: '('}\n")
    assert "bad XPath" in _error(
        tmp_path, OPTIONS + "      - expect: {reply: 200, body: {xpath: {'//nope:x': 1}}}\n")
    assert "'subscribe' is not a SIP method" in _error(
        tmp_path, OPTIONS.replace("OPTIONS", "subscribe"))


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    text = _error(tmp_path, "scenarios: [\n")
    assert text.startswith(f"{tmp_path}/s.test.yaml:3:1: YAML: ")


def test_missing_script(tmp_path: Path) -> None:
    path = tmp_path / "s.test.yaml"
    path.write_text("script: nope.cfg\nscenarios: []\n")
    with pytest.raises(ScenarioError, match=r"s\.test\.yaml:1:9: no such script: "):
        load_file(str(path))


def test_the_command_reports_a_bad_file_and_exits_1(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "scenarios:\n  - name: a\n    steps:\n      - sned: {}\n")
    assert main(["test", str(path)]) == 1
    out = capsys.readouterr().out
    assert "unknown key 'sned'" in out and "1 error in" in out
    assert "Traceback" not in out
