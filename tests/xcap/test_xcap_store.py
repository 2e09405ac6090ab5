"""xcap: reading pres-rules from the `xcap` table (SQLite), the module's parameters and lifetime."""

from pathlib import Path

import pytest

from routescript.core.server import Server
from routescript.db import open_database
from routescript.modules.presence_xml.rules import SubHandling, evaluate, parse_rules
from routescript.modules.xcap.store import MAX_DOC_SIZE
from routescript.modules.xcap import PRES_RULES, RESOURCE_LISTS, XcapModule, bind_xcap, get_xcap_doc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pres-rules.xml"


def row(username, domain, doc, doc_type=PRES_RULES, doc_uri="/pres-rules/index", etag="e1"):
    return {"username": username, "domain": domain, "doc": doc, "doc_type": doc_type, "etag": etag,
            "source": 1, "doc_uri": doc_uri, "port": 0}


@pytest.fixture
async def db(tmp_path):
    database = await open_database(f"sqlite:///{tmp_path / 'xcap.sqlite'}")
    await database.ensure_schema(["xcap"])
    yield database
    await database.close()


async def test_reads_the_pres_rules_of_a_user(db):
    await db.insert("xcap", row("alice", "example.com", EXAMPLE.read_bytes()))
    await db.insert("xcap", row("alice", "example.com", b"<resource-lists/>", RESOURCE_LISTS, "/rl/index"))
    await db.insert("xcap", row("bob", "example.com", b"<bob/>"))
    doc = await get_xcap_doc(db, "alice", "example.com")
    assert doc == EXAMPLE.read_bytes()
    assert evaluate(parse_rules(doc), "sip:carol@example.com").action is SubHandling.ALLOW
    assert await get_xcap_doc(db, "alice", "example.com", RESOURCE_LISTS) == b"<resource-lists/>"
    assert await get_xcap_doc(db, "alice", "example.org") is None
    assert await get_xcap_doc(db, "carol", "example.com") is None


async def test_oversized_document_is_ignored(db):
    await db.insert("xcap", row("alice", "example.com", b"<r>" + b" " * MAX_DOC_SIZE + b"</r>"))
    assert await get_xcap_doc(db, "alice", "example.com") is None


async def test_several_documents_oldest_wins(db):
    await db.insert("xcap", row("alice", "example.com", b"<first/>", doc_uri="/a"))
    await db.insert("xcap", row("alice", "example.com", b"<second/>", doc_uri="/b"))
    assert await get_xcap_doc(db, "alice", "example.com") == b"<first/>"


class FakeServer:
    def __init__(self, database):
        self._db = database
        self.asked = []

    async def database(self, url):
        self.asked.append(url)
        return self._db


def params(**overrides):
    values = {p.name: p.default for p in XcapModule.params}
    values.update(overrides)
    return values


async def test_module_reads_through_the_shared_database(db):
    await db.insert("xcap", row("alice", "example.com", b"<rules/>"))
    server = FakeServer(db)
    module = XcapModule(server, params(db_url="sqlite:///shared.db", integrated_xcap_server=1))
    module.check()
    await module.start()
    assert server.asked == ["sqlite:///shared.db"]
    assert module.integrated_server
    assert await module.get_rules_doc("alice", "example.com") == b"<rules/>"
    assert await module.get_xcap_doc("alice", "example.com", RESOURCE_LISTS) is None
    await module.stop()
    assert await module.get_rules_doc("alice", "example.com") is None  # stopped: no database any more


async def test_module_with_a_renamed_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'renamed.sqlite'}"
    module = XcapModule(FakeServer(None), params(db_url=url, xcap_table="xcap_docs"))
    await module.start()
    try:
        await module._db.insert("xcap", row("alice", "example.com", b"<renamed/>"))
        assert await module.get_rules_doc("alice", "example.com") == b"<renamed/>"
    finally:
        await module.stop()
    raw = await open_database(url, table_names={"xcap": "xcap_docs"})
    try:
        assert [r["doc"] for r in await raw.query("xcap")] == [b"<renamed/>"]   # stored under xcap_docs
    finally:
        await raw.close()


async def test_module_without_db_url_has_no_documents():
    module = XcapModule(FakeServer(None), params())
    module.check()
    await module.start()
    assert await module.get_rules_doc("alice", "example.com") is None


def test_integrated_server_needs_a_db_url():
    with pytest.raises(Exception) as info:
        XcapModule(FakeServer(None), params(integrated_xcap_server=1)).check()
    assert "db_url" in str(info.value)


def test_opensips_3x_script_loads(tmp_path):
    cfg = tmp_path / "x.cfg"
    cfg.write_text('socket=udp:127.0.0.1:5060\nloadmodule "xcap.so"\n'
                   f'modparam("xcap", "db_url", "sqlite:///{tmp_path / "p.db"}")\n'
                   'modparam("xcap", "integrated_xcap_server", 1)\nroute { exit; }\n')
    server = Server()
    server.load(str(cfg))
    module = bind_xcap(server)
    assert isinstance(module, XcapModule) and module.integrated_server
    assert bind_xcap(object()) is None
