"""pua_dialoginfo with the FakeDialogApi and a recording pua: what is published for each state change
and parameter (caller_confirmed, publish_on_trying, sides, include_*), the dialog-info documents checked
against RFC 4235's schema rules, the ETags kept in the dialog and used after a restart, the refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fake_dialog import DialogInfo, FakeDialogApi
from lxml import etree

from routescript.core.loading import LoadError
from routescript.core.server import Server
from routescript.modules.pua_dialoginfo import _dialog
from routescript.modules.pua_dialoginfo._dialog import DLG_FLAG_PUA_DIALOGINFO, DlgState
from routescript.modules.pua_dialoginfo.xml import Party, build_dialoginfo

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}
STATES = {"trying", "proceeding", "early", "confirmed", "terminated"}


def check_rfc4235(body: bytes) -> etree._Element:
    """The rules of RFC 4235 section 4's schema a phone relies on: root dialog-info in the namespace with
    version (non-negative integer), state full|partial, entity; each dialog with id, an optional
    direction initiator|recipient, <state> first with one of the five values, then local before remote,
    each participant identity before target, target with a uri."""
    assert body.startswith(b"<?xml")
    root = etree.fromstring(body)
    assert root.tag == "{urn:ietf:params:xml:ns:dialog-info}dialog-info"
    assert root.get("version", "").isdigit() and root.get("state") in ("full", "partial")
    assert root.get("entity")
    for dialog in root.findall("d:dialog", NS):
        assert dialog.get("id")
        assert dialog.get("direction") in (None, "initiator", "recipient")
        children = [etree.QName(c).localname for c in dialog]
        assert children[0] == "state" and dialog.findtext("d:state", namespaces=NS) in STATES
        parts = [c for c in children if c in ("local", "remote")]
        assert parts in ([], ["local", "remote"], ["local"], ["remote"])
        for part in dialog.findall("d:local", NS) + dialog.findall("d:remote", NS):
            names = [etree.QName(c).localname for c in part]
            assert names == sorted(names, key=["identity", "target", "session-description"].index)
            target = part.find("d:target", NS)
            assert target is None or target.get("uri")
    return root


def test_document_shape() -> None:
    body = build_dialoginfo("early", Party("sip:bob@example.com", "Bob", "sip:bob@10.0.0.2:5062"),
                            Party("sip:alice@example.com", 'Alice "A" <&>'), call_id="c-1@h",
                            initiator=False, local_tag="bt", remote_tag="at")
    root = check_rfc4235(body)
    assert (root.get("version"), root.get("state"), root.get("entity")) == \
        ("0", "full", "sip:bob@example.com")
    d = root.find("d:dialog", NS)
    assert d is not None
    assert dict(d.attrib) == {"id": "c-1@h", "call-id": "c-1@h", "local-tag": "bt", "remote-tag": "at",
                              "direction": "recipient"}
    assert d.findtext("d:local/d:identity", namespaces=NS) == "sip:bob@example.com"
    assert d.find("d:local/d:target", NS).get("uri") == "sip:bob@10.0.0.2:5062"        # type: ignore[union-attr]
    assert d.find("d:remote/d:identity", NS).get("display") == 'Alice "A" <&>'          # type: ignore[union-attr]
    assert d.find("d:remote/d:target", NS).get("uri") == "sip:alice@example.com"        # type: ignore[union-attr]
    bare = check_rfc4235(build_dialoginfo("confirmed", Party("sip:a@x"), Party("sip:b@x"), call_id="c",
                                          initiator=True, local_tag="t", remote_tag=None,
                                          include_callid=False, include_tags=False,
                                          include_localremote=False))
    d = bare.find("d:dialog", NS)
    assert d is not None and dict(d.attrib) == {"id": "c", "direction": "initiator"} and len(d) == 1
    with pytest.raises(ValueError):
        build_dialoginfo("ringing", Party("sip:a@x"), Party("sip:b@x"), call_id="c", initiator=True,
                         local_tag=None, remote_tag=None)


@dataclass
class RecordingPua:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, pres_uri: str, event: str, body: bytes | None, **kw: Any) -> bool:
        self.calls.append({"uri": pres_uri, "event": event, "body": body, **kw})
        return True

    def states(self) -> list[tuple[str, str, str | None]]:
        out = []
        for c in self.calls:
            root = check_rfc4235(c["body"])
            d = root.find("d:dialog", NS)
            assert d is not None
            out.append((c["uri"], d.get("direction") or "", d.findtext("d:state", namespaces=NS)))
        return out


CFG = """
socket = udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "dialog.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"
{params}
route {{
    {body}
}}
"""


def load(tmp_path: Path, fake: FakeDialogApi, params: str = "", body: str = "exit;") -> Server:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(CFG.format(port=5999, params=params, body=body))
    server = Server()
    server.load(str(cfg))
    return server


def dialog(state: DlgState = DlgState.UNCONFIRMED, sides: str = "AB", **values: str) -> DialogInfo:
    vals = {"__pua_dlginfo_sides": sides, "__pua_dlginfo_a": '"Alice" <sip:alice@example.com>',
            "__pua_dlginfo_b": "<sip:bob@example.com>", **values}
    return DialogInfo("1:2", "call-1", "sip:alice@example.com", "ft", "sip:bob@example.com", None,
                      "sip:bob@example.com", "sip:alice@10.0.0.1", None, state, 0.0, values=vals,
                      flags=DLG_FLAG_PUA_DIALOGINFO)


def module(tmp_path: Path, monkeypatch: Any, params: str = "") -> tuple[FakeDialogApi, RecordingPua, Any]:
    fake = FakeDialogApi()
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: fake)
    server = load(tmp_path, fake, params)
    mod = server.modules.get("pua_dialoginfo")
    rec = RecordingPua()
    mod.pua = rec              # type: ignore[union-attr]
    return fake, rec, mod


def test_states_per_side(tmp_path: Path, monkeypatch: Any) -> None:
    fake, pua, _ = module(tmp_path, monkeypatch)
    fake.add(dialog())
    fake.change("1:2", DlgState.EARLY, to_tag="tt")
    fake.change("1:2", DlgState.CONFIRMED_NA)
    fake.change("1:2", DlgState.CONFIRMED)          # no second confirmed
    fake.change("1:2", DlgState.DELETED)
    a, b = "sip:alice@example.com", "sip:bob@example.com"
    assert pua.states() == [(a, "initiator", "early"), (b, "recipient", "early"),
                            (a, "initiator", "confirmed"), (b, "recipient", "confirmed"),
                            (a, "initiator", "terminated"), (b, "recipient", "terminated")]
    assert [c["expires"] for c in pua.calls] == [3600, 3600, 43200, 43200, 0, 0]
    assert {c["event"] for c in pua.calls} == {"dialog"} and pua.calls[0]["id"] == "1:2/A"
    assert pua.calls[0]["content_type"] == "application/dialog-info+xml"
    # a dialog not flagged, or failed before anything was published: nothing
    pua.calls.clear()
    fake.add(dialog())
    fake.change("1:2", DlgState.DELETED)
    fake.add(DialogInfo("9:9", "c9", "sip:a@x", "f", "sip:b@x", None, "sip:b@x", None, None,
                        DlgState.UNCONFIRMED, 0.0))
    fake.change("9:9", DlgState.EARLY)
    assert pua.calls == []


def test_caller_confirmed_publish_on_trying_and_one_side(tmp_path: Path, monkeypatch: Any) -> None:
    fake, pua, _ = module(tmp_path, monkeypatch, 'modparam("pua_dialoginfo", "caller_confirmed", 1)\n'
                            'modparam("pua_dialoginfo", "publish_on_trying", 1)\n'
                            'modparam("pua_dialoginfo", "include_localremote", 0)')
    fake.add(dialog(sides="B"))
    fake.change("1:2", DlgState.EARLY)
    fake.change("1:2", DlgState.DELETED)
    assert pua.states() == [("sip:bob@example.com", "recipient", "early"),
                            ("sip:bob@example.com", "recipient", "terminated")]
    assert b"<local>" not in pua.calls[0]["body"]
    pua.calls.clear()
    fake.add(dialog(sides="A"))
    fake.change("1:2", DlgState.EARLY)
    assert pua.states() == [("sip:alice@example.com", "initiator", "confirmed")]   # caller_confirmed
    # publish_on_trying: a dialog that fails while trying still publishes terminated
    pua.calls.clear()
    fake.add(dialog(sides="AB"))
    fake.change("1:2", DlgState.DELETED)
    assert [s for _, _, s in pua.states()] == ["terminated", "terminated"]


def test_etag_kept_in_the_dialog_and_used_after_a_restart(tmp_path: Path, monkeypatch: Any) -> None:
    fake, pua, _ = module(tmp_path, monkeypatch)
    fake.add(dialog())
    fake.change("1:2", DlgState.CONFIRMED)
    pua.calls[0]["on_etag"]("E-A")
    pua.calls[1]["on_etag"]("E-B")
    assert fake.fetch_value("1:2", "__pua_dlginfo_etag_A") == "E-A"
    pua.calls.clear()
    fake.restart(fake.dlgs["1:2"])
    assert [(c["etag"], c["expires"]) for c in pua.calls] == [("E-A", 43200), ("E-B", 43200)]
    assert [s for _, _, s in pua.states()] == ["confirmed", "confirmed"]


@pytest.mark.parametrize("params,needle", [
    ('modparam("pua_dialoginfo", "osips_ps", 0)', "osips_ps"),
    ('modparam("pua_dialoginfo", "nopublish_flag", "np")', "nopublish_flag"),
    ('modparam("pua_dialoginfo", "caller_spec_param", "avp10")', "caller_spec_param"),
    ('modparam("pua", "db_table", "presentity")', "db_table"),
    ('modparam("pua", "db_table", "pua-2")', "db_table"),
    ('modparam("pua", "cluster_id", 1)', "cluster_id"),
])
def test_refused_parameters(tmp_path: Path, monkeypatch: Any, params: str, needle: str) -> None:
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: FakeDialogApi())
    with pytest.raises(LoadError) as info:
        load(tmp_path, FakeDialogApi(), params)
    assert needle in str(info.value)


@pytest.mark.parametrize("call,needle", [('dialoginfo_set("C");', "side"),
                                         ('dialoginfo_mute_branch("A");', "branch")])
def test_refused_calls(tmp_path: Path, monkeypatch: Any, call: str, needle: str) -> None:
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: FakeDialogApi())
    with pytest.raises(LoadError) as info:
        load(tmp_path, FakeDialogApi(), body=call + " exit;")
    assert needle in str(info.value)


def test_without_the_dialog_module(tmp_path: Path) -> None:
    cfg = tmp_path / "nodlg.cfg"
    cfg.write_text(CFG.format(port=5999, params="", body="exit;").replace('loadmodule "dialog.so"\n', ""))
    with pytest.raises(LoadError) as info:
        Server().load(str(cfg))
    assert "depends on module 'dialog'" in str(info.value)


def test_the_real_dialog_api_numbers_as_this_package() -> None:
    assert _dialog.same_values()


async def test_bound_to_the_real_dialog_module_at_start(tmp_path: Path) -> None:
    server = load(tmp_path, FakeDialogApi())
    await server.start()
    try:
        mod: Any = server.modules.get("pua_dialoginfo")
        from routescript.modules.dialog.api import DialogApi

        assert isinstance(mod.dialogs, DialogApi)
    finally:
        await server.stop()


async def test_dialogs_loaded_before_a_late_bind_are_republished(tmp_path: Path, monkeypatch: Any) -> None:
    """The real dialog module is found only at start(), after its own start() loaded its table and fired
    on_loaded: the loaded flagged dialogs are republished from pua_dialoginfo's start()."""
    fake = FakeDialogApi()
    calls = iter([None])
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: next(calls, fake))
    server = load(tmp_path, fake)
    mod: Any = server.modules.get("pua_dialoginfo")
    assert mod.dialogs is None                                    # not found during check()
    fake.add(dialog(DlgState.CONFIRMED, __pua_dlginfo_etag_A="EA", __pua_dlginfo_etag_B="EB"))
    rec = RecordingPua()
    mod.pua = rec
    await mod.start()
    assert [(c["uri"], c["etag"]) for c in rec.calls] == [("sip:alice@example.com", "EA"),
                                                          ("sip:bob@example.com", "EB")]
    assert [s for _, _, s in rec.states()] == ["confirmed", "confirmed"]
