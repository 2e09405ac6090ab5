"""message.py owns a message's storage: no other file assigns its private fields (issue 16 item 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import routescript

ROOT = Path(routescript.__file__).resolve().parent.parent
STORAGE = {"_headers", "_index", "_cache", "_raw", "_body", "_ruri"}   # SIPMessage/SIPRequest slots


def _assigned_private_fields(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (isinstance(sub, ast.Attribute) and sub.attr in STORAGE
                        and not (isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"))):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(sub)}")
    return found


def test_only_message_py_assigns_a_messages_storage() -> None:
    files = [*(ROOT / "routescript").rglob("*.py"), *(ROOT / "modules").rglob("*.py")]
    owner = ROOT / "routescript" / "sip" / "message.py"
    offenders = [hit for path in files if path != owner for hit in _assigned_private_fields(path)]
    assert offenders == []


def test_the_sip_layer_generates_no_code() -> None:
    for path in (ROOT / "routescript" / "sip").rglob("*.py"):
        calls = {node.func.id for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert not calls & {"exec", "eval", "compile"}, path
