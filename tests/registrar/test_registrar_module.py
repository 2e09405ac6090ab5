"""save()/lookup() & co. run by small scripts in process (routescript.testing.route_run), in every
db_mode on SQLite and PostgreSQL: replies, stored rows, loading back at start, MI, bad input."""

from __future__ import annotations

import asyncio

from pathlib import Path
from typing import Any

import pytest

from routescript.core.module import MIError
from routescript.db import open_database
from routescript.sip import SIPRequest
from routescript.testing import route_run as rr

pytestmark = pytest.mark.asyncio

SCRIPT = '''
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", DBMODE)
DBURL
route {
    if (is_method("REGISTER")) { save("location"); exit; }
    if (is_method("OPTIONS")) { $var(r) = registered("location"); exit; }
    lookup("location", "m");
    $var(rc) = $retcode;
}
'''


class Harness:
    def __init__(self, tmp: Path, mode: int, db_url: str | None, extra: str = "") -> None:
        text = SCRIPT.replace("DBMODE", str(mode)).replace(
            "DBURL", f'modparam("usrloc", "db_url", "{db_url}")' if db_url else "") + extra
        self.server = rr.load(tmp, text, name=f"t{id(self)}.cfg")
        self.sent: list[tuple[int, str, Any]] = []
        self.server.reply = self._reply  # type: ignore[method-assign]

    def _reply(self, ctx: Any, code: int, reason: str | None = None, **kw: Any) -> None:
        self.sent.append((code, reason or "", kw.get("headers", ())))

    @property
    def usrloc(self) -> Any:
        return self.server.modules.get("usrloc")

    async def start(self) -> Harness:
        for module in self.server.modules.instances.values():
            await module.start()
        return self

    async def stop(self) -> None:
        for module in self.server.modules.instances.values():
            await module.stop()
        await self.server.databases.close_all()

    async def register(self, *contacts: str, expires: int | None = 300, callid: str = "reg1", cseq: int = 1,
                       extra: str = "", user: str = "bob") -> tuple[int, str, Any]:
        lines = "".join(f"Contact: {c}\r\n" for c in contacts)
        if expires is not None:
            lines += f"Expires: {expires}\r\n"
        msg = rr.request("REGISTER", ruri="sip:example.com", extra=lines + extra)
        msg.set_header("Call-ID", callid)
        msg.set_header("CSeq", f"{cseq} REGISTER")
        msg.set_header("To", f"<sip:{user}@example.com>")
        self.sent.clear()
        ctx = await rr.run(self.server, msg)
        assert ctx.failure is None, ctx.failure
        assert len(self.sent) == 1
        return self.sent[0]

    async def lookup(self, method: str = "INVITE", user: str = "bob") -> Any:
        msg = rr.request(method, ruri=f"sip:{user}@example.com")
        ctx = await rr.run(self.server, msg)
        assert ctx.failure is None, ctx.failure
        return ctx


def stored(h: Harness) -> int:
    dom = h.usrloc.service.domains.get("location")
    return 0 if dom is None else dom.contact_count()


def contacts_of(reply: tuple[int, str, Any]) -> list[str]:
    return [v for n, v in reply[2] if n == "Contact"]


async def test_register_lookup_refresh_remove_in_memory(tmp_path: Path) -> None:
    h = await Harness(tmp_path, 0, None).start()
    code, _, _ = reply = await h.register("<sip:bob@10.0.0.9:5060>;q=0.5", "<sip:bob@10.0.0.8>")
    assert code == 200
    assert contacts_of(reply) == ["<sip:bob@10.0.0.9:5060>;expires=300;q=0.5",
                                  "<sip:bob@10.0.0.8>;expires=300"]
    ctx = await h.lookup()
    assert ctx.vars["rc"] == 1 and isinstance(ctx.msg, SIPRequest)
    assert ctx.msg.ruri == "sip:bob@10.0.0.8"                 # no q counts as 1.0: first
    assert [b.uri for b in ctx.branches] == ["sip:bob@10.0.0.9:5060"] and ctx.branches[0].q == 0.5
    # refresh one, remove the other with expires=0
    reply = await h.register("<sip:bob@10.0.0.8>;expires=600", "<sip:bob@10.0.0.9:5060>;expires=0", cseq=2)
    assert reply[0] == 200 and contacts_of(reply) == ["<sip:bob@10.0.0.8>;expires=600"]
    ctx = await h.lookup()
    assert ctx.msg.ruri == "sip:bob@10.0.0.8" and not ctx.branches
    # unregistered user: -1
    assert (await h.lookup(user="nobody")).vars["rc"] == -1
    # * with Expires: 0
    reply = await h.register("*", expires=0, cseq=3)
    assert reply[0] == 200 and contacts_of(reply) == []
    assert (await h.lookup()).vars["rc"] == -1
    await h.stop()


async def test_423_and_method_filtering(tmp_path: Path) -> None:
    h = await Harness(tmp_path, 0, None).start()
    code, reason, headers = await h.register("<sip:bob@h>", expires=5)
    assert (code, reason) == (423, "Interval Too Brief") and ("Min-Expires", "60") in headers
    assert (await h.lookup()).vars["rc"] == -1
    assert (await h.register("<sip:bob@h>", extra="Allow: INVITE, ACK, BYE\r\n"))[0] == 200
    assert (await h.lookup("INVITE")).vars["rc"] == 1
    assert (await h.lookup("MESSAGE")).vars["rc"] == -2
    await h.stop()


@pytest.mark.parametrize("contacts,expected", [
    (["<sip:bob@h>;q=7"], 400),
    (["<sip:bob@h>;q=abc"], 400),
    (["<sip:bob@h>;expires=abc"], 400),
    (["<sip:bob@h>", "*"], 400),
    (["*"], 400),                      # * needs Expires: 0
])
async def test_bad_contacts_are_refused_and_nothing_is_stored(tmp_path: Path, contacts: list[str],
                                                              expected: int) -> None:
    h = await Harness(tmp_path, 0, None).start()
    code, _, _ = await h.register(*contacts)
    assert code == expected
    assert stored(h) == 0
    await h.stop()


async def test_oversize_contact_uri_and_too_many_contacts(tmp_path: Path) -> None:
    h = await Harness(tmp_path, 0, None).start()
    long_uri = "<sip:" + "a" * 2000 + "@h>"
    code, reason, _ = await h.register(long_uri)
    assert code == 400 and "too long" in reason
    many = ", ".join(f"<sip:u{i}@h>" for i in range(150))
    code, reason, _ = await h.register(many)
    assert code == 400 and "Too many" in reason
    assert stored(h) == 0
    await h.stop()


async def test_max_contacts_503_with_retry_after(tmp_path: Path) -> None:
    extra = 'modparam("registrar", "max_contacts", 1)\nmodparam("registrar", "retry_after", 30)\n'
    h = Harness(tmp_path, 0, None)
    # parameters go before the route: rebuild the script with them
    text = SCRIPT.replace("DBMODE", "0").replace("DBURL", extra)
    h.server = rr.load(tmp_path, text, name="mc.cfg")
    h.server.reply = h._reply  # type: ignore[method-assign]
    await h.start()
    assert (await h.register("<sip:bob@h1>"))[0] == 200
    code, _, headers = await h.register("<sip:bob@h2>", callid="other")
    assert code == 503 and ("Retry-After", "30") in headers
    await h.stop()


@pytest.mark.parametrize("mode", [1, 2, 3])
async def test_db_modes_store_and_load_back(tmp_path: Path, db_url: str, mode: int) -> None:
    h = await Harness(tmp_path, mode, db_url).start()
    assert (await h.register("<sip:bob@10.0.0.8>;q=0.5", extra="User-Agent: phone/1\r\n"))[0] == 200
    ctx = await h.lookup()
    assert ctx.vars["rc"] == 1 and ctx.msg.ruri == "sip:bob@10.0.0.8"
    if mode == 2:
        async with await open_database(db_url) as db:
            await db.ensure_schema(["location"])
            assert await db.count("location") == 0      # write-back: not yet
        await h.usrloc.timer_tick()
    async with await open_database(db_url) as db:
        [row] = await db.query("location")
    assert row["username"] == "bob" and row["contact"] == "sip:bob@10.0.0.8" and row["q"] == 0.5
    assert row["callid"] == "reg1" and row["user_agent"] == "phone/1"
    assert row["socket"] == "udp:127.0.0.1:5070"
    assert row["last_modified"].year >= 2024
    await h.stop()
    # a new server loads it back (modes 1-2) or reads it (mode 3)
    h2 = await Harness(tmp_path, mode, db_url).start()
    ctx = await h2.lookup()
    assert ctx.vars["rc"] == 1 and ctx.msg.ruri == "sip:bob@10.0.0.8"
    # removal reaches the table
    assert (await h2.register("<sip:bob@10.0.0.8>", expires=0, cseq=2))[0] == 200
    await h2.usrloc.timer_tick()
    async with await open_database(db_url) as db:
        assert await db.count("location") == 0
    await h2.stop()


async def test_a_write_back_cancelled_midway_is_written_at_stop(tmp_path: Path, db_url: str) -> None:
    """db_mode 2: the stop cancels the timer, maybe in the middle of a write-back; what that write-back
    had taken must still reach the table (the final flush at stop), or an acknowledged REGISTER is lost."""
    h = await Harness(tmp_path, 2, db_url).start()
    assert (await h.register("<sip:bob@10.0.0.8>"))[0] == 200
    svc = h.usrloc.service
    real, entered = svc._write, asyncio.Event()

    async def stuck(domain: str, changes: Any) -> None:
        entered.set()
        await asyncio.Event().wait()   # the commit never comes back: the timer is cancelled meanwhile

    svc._write = stuck
    flush = asyncio.create_task(svc.flush())
    await entered.wait()
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    svc._write = real
    await h.stop()                     # the final flush
    async with await open_database(db_url) as db:
        [row] = await db.query("location")
    assert row["contact"] == "sip:bob@10.0.0.8"


async def test_expired_rows_are_deleted_by_the_timer(tmp_path: Path, db_url: str) -> None:
    h = await Harness(tmp_path, 1, db_url).start()
    svc = h.usrloc.service
    base = svc.clock()
    svc.clock = lambda: base
    assert (await h.register("<sip:bob@h>", expires=60))[0] == 200
    svc.clock = lambda: base + 61
    assert (await h.lookup()).vars["rc"] == -1
    await h.usrloc.timer_tick()
    async with await open_database(db_url) as db:
        assert await db.count("location") == 0
    assert stored(h) == 0
    await h.stop()


async def test_mi_commands(tmp_path: Path) -> None:
    h = await Harness(tmp_path, 0, None).start()
    ul = h.usrloc
    assert (await h.register("<sip:bob@10.0.0.8>"))[0] == 200
    dump = await ul.mi_dump()
    [dom] = dump["Domains"]
    assert dom["name"] == "location" and dom["AORs"][0]["AOR"] == "bob"
    c = dom["AORs"][0]["Contacts"][0]
    assert c["Contact"] == "sip:bob@10.0.0.8" and 295 <= c["Expires"] <= 300 and c["Callid"] == "reg1"
    assert c["Cseq"] == 1 and c["State"] == "CS_NEW" and c["Methods"] == 0xFFFFFFFF and c["Q"] == ""
    assert (await ul.mi_dump("brief"))["Domains"][0]["AORs"] == [{"AOR": "bob"}]
    shown = await ul.mi_show_contact("location", "bob@example.com")
    assert shown["AOR"] == "bob" and len(shown["Contacts"]) == 1
    assert await ul.mi_add("location", "alice", "sip:alice@h", "0", "0.7") == "OK"
    alice = (await ul.mi_show_contact("location", "alice"))["Contacts"][0]
    assert alice["Expires"] == "permanent" and alice["Q"] == "0.7"
    assert alice["User-agent"] == "OpenSIPS MI Server"
    assert (await h.lookup(user="alice")).msg.ruri == "sip:alice@h"
    assert await ul.mi_rm_contact("location", "alice", "sip:alice@h") == "OK"
    with pytest.raises(MIError) as err:
        await ul.mi_show_contact("location", "alice")
    assert err.value.code == 404
    assert await ul.mi_rm("location", "bob") == "OK"
    assert (await h.lookup()).vars["rc"] == -1
    with pytest.raises(MIError):
        await ul.mi_add("location", "x", "sip:x@h", "60", "5")
    assert await ul.mi_flush() == "OK"
    await h.stop()


async def test_save_flags_and_refusals(tmp_path: Path) -> None:
    from routescript.core.loading import LoadError
    from routescript.modules.registrar import parse_save_flags
    f = parse_save_flags("memory-only;no-reply;max-contacts=3;min-expires=10;max-expires=99;path-strict")
    assert f.memory_only and f.no_reply and f.max_contacts == 3 and f.min_expires == 10
    assert f.max_expires == 99 and f.path == "strict"
    old = parse_save_flags("rc5e10E99p2")
    assert old.no_reply and old.max_contacts == 5 and old.min_expires == 10 and old.max_expires == 99
    assert old.path == "strict"
    with pytest.raises(LoadError, match="unknown save"):
        rr.load(tmp_path, SCRIPT.replace("DBMODE", "0").replace("DBURL", "").replace(
            'save("location")', 'save("location", "bogus")'), name="bad.cfg")
    with pytest.raises(LoadError, match="cluster"):
        rr.load(tmp_path, SCRIPT.replace("DBMODE", "0").replace(
            "DBURL", 'modparam("usrloc", "cluster_mode", "full-sharing")'), name="bad2.cfg")


async def test_path_is_stored_and_lookup_routes_by_it(tmp_path: Path) -> None:
    h = await Harness(tmp_path, 0, None).start()
    h.server = rr.load(tmp_path, SCRIPT.replace("DBMODE", "0").replace("DBURL", "").replace(
        'save("location")', 'save("location", "path-lazy")'), name="path.cfg")
    h.server.reply = h._reply  # type: ignore[method-assign]
    await h.start()
    reply = await h.register("<sip:bob@10.0.0.8>",
                             extra="Path: <sip:edge.example.com;lr>\r\nSupported: path\r\n")
    assert reply[0] == 200 and ("Path", "<sip:edge.example.com;lr>") in reply[2]
    ctx = await h.lookup()
    assert ctx.msg.ruri == "sip:bob@10.0.0.8" and ctx.dst_uri == "sip:edge.example.com;lr"
    assert ctx.msg.header("Route") == "<sip:edge.example.com;lr>"
    await h.stop()
