"""sipmsgops and textops functions a registrar/presence script uses, on real parsed messages, and the
replies the core builds from them (append_to_reply, Record-Route copied into 18x/2xx)."""

from __future__ import annotations

import pytest
from basicmods_harness import Harness, request

pytestmark = pytest.mark.asyncio


def names(ctx) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.name for h in ctx.msg.headers]


async def test_append_hf_and_insert_hf_with_an_anchor() -> None:
    h = Harness(["sipmsgops"])
    ctx = h.ctx(request("SUBSCRIBE", extra="Event: presence\n"))
    assert h.call(ctx, "append_hf", "P-After: 1\r\n", "From") == 1
    assert h.call(ctx, "insert_hf", "P-Before: 2\r\n", "f") == 1     # compact form of From
    assert names(ctx)[1:5] == ["P-Before", "From", "P-After", "To"]
    assert h.call(ctx, "append_hf", "P-X: 3\r\n", "Subject") == -1   # no such header: nothing added
    assert not ctx.msg.has_header("P-X")
    assert h.call(ctx, "append_hf", "P-Last: 4") == 1 and names(ctx)[-1] == "P-Last"
    assert b"P-After: 1\r\n" in ctx.msg.to_bytes()


async def test_remove_hf_plain_regex_and_glob_forms() -> None:
    h = Harness(["sipmsgops"])
    extra = "X-One: 1\nX-Two: 2\nP-Asserted-Identity: <sip:a@b>\nSubject: s\n"
    ctx = h.ctx(request(extra=extra))
    assert h.call(ctx, "remove_hf_re", __import__("re").compile("x-.*", 2)) == 1
    assert not ctx.msg.has_header("X-One") and not ctx.msg.has_header("X-Two")
    assert h.call(ctx, "remove_hf_glob", "p-*") == 1 and not ctx.msg.has_header("P-Asserted-Identity")
    assert h.call(ctx, "remove_hf", "Subject") == 1 and h.call(ctx, "remove_hf", "Subject") == -1
    ctx = h.ctx(request(extra=extra))
    assert h.call(ctx, "remove_hf", "X-.*", "r") == 1 and not ctx.msg.has_header("X-One")
    assert h.call(ctx, "remove_hf", "P-*", "g") == 1 and ctx.msg.has_header("Subject")


async def test_append_to_reply_goes_into_every_reply() -> None:
    h = Harness(["sipmsgops", "sl"])
    ctx = h.ctx(request())
    assert h.call(ctx, "append_to_reply", "Allow-Events: presence\r\nX-Reason: test\r\n") == 1
    assert h.call(ctx, "append_to_reply", "no colon here") == -1
    h.call(ctx, "sl_send_reply", 200, "OK")
    (resp,) = h.transport.replies
    assert resp.header("Allow-Events") == "presence" and resp.header("X-Reason") == "test"


async def test_record_route_is_copied_into_2xx_and_18x_only() -> None:
    h = Harness(["rr", "sl"])
    ctx = h.ctx(request("SUBSCRIBE", extra="Record-Route: <sip:proxy.example;lr>\n"))
    assert h.call(ctx, "record_route") == 1
    h.call(ctx, "sl_send_reply", 202, "Accepted")
    ctx2 = h.ctx(request("SUBSCRIBE", extra="Record-Route: <sip:proxy.example;lr>\n"))
    h.call(ctx2, "sl_send_reply", 489, "Bad Event")
    ok, bad = h.transport.replies
    # record_route() acts on what is relayed (a send hook, as in OpenSIPS): our own reply carries the
    # Record-Route set the request came with
    assert ok.header_all("Record-Route") == ["<sip:proxy.example;lr>"]
    assert not bad.has_header("Record-Route")   # RFC 3261 12.1.1: only for 18x/2xx


async def test_is_uri_user_e164_and_ruri_params() -> None:
    h = Harness(["sipmsgops"])
    ctx = h.ctx(request(ruri="sip:+4930123456@127.0.0.1;user=phone"))
    assert h.call(ctx, "is_uri_user_e164", "sip:+4930123456@example.com") == 1
    assert h.call(ctx, "is_uri_user_e164", "sip:4930123456@example.com") == -1
    assert h.call(ctx, "is_uri_user_e164", "sip:+1@example.com") == -1
    assert h.call(ctx, "is_uri_user_e164", "not a uri") == -1
    assert h.call(ctx, "ruri_has_param", "user") == 1
    assert h.call(ctx, "ruri_has_param", "user", "phone") == 1
    assert h.call(ctx, "ruri_has_param", "user", "ip") == -1
    assert h.call(ctx, "ruri_add_param", "x=1") == 1 and ctx.msg.ruri.endswith(";user=phone;x=1")
    assert h.call(ctx, "ruri_del_param", "user") == 1 and ctx.msg.ruri == "sip:+4930123456@127.0.0.1;x=1"
    assert h.call(ctx, "ruri_del_param", "user") == -1


async def test_subst_edits_headers_and_body_after_the_first_line() -> None:
    h = Harness(["textops"])
    ctx = h.ctx(request("PUBLISH", extra="Subject: hello world\n", body="status=open"))
    assert h.call(ctx, "subst", "/^Subject: ([a-z]+) ([a-z]+)/Subject: \\2 \\1/s") == 1
    assert ctx.msg.header("Subject") == "world hello"
    assert h.call(ctx, "subst", "/open/closed-now/") == 1
    assert ctx.msg.body == b"status=closed-now" and ctx.msg.header("Content-Length") == "17"
    assert h.call(ctx, "subst", "/nomatch-anywhere//") == -1
    # the request line is never touched (OpenSIPS starts after it)
    assert h.call(ctx, "subst", "/PUBLISH sip/GARBAGE/") == -1 and ctx.msg.method == "PUBLISH"
    # a result that no longer parses is refused and the message stays as it was
    assert h.call(ctx, "subst", "/^CSeq: .*$/CSeq: x/s") == -1 and ctx.msg.cseq.number == 1
    with pytest.raises(ValueError):
        h.functions["subst"].args[0].fixup("/(/x/")      # a bad expression is a load-time error


async def test_subst_uri_and_subst_user() -> None:
    h = Harness(["textops"])
    ctx = h.ctx(request(ruri="sip:0049301234@127.0.0.1"))
    assert h.call(ctx, "subst_user", "/^00/+/") == 1 and ctx.msg.ruri == "sip:+49301234@127.0.0.1"
    assert h.call(ctx, "subst_user", "/^00/+/") == -1
    assert h.call(ctx, "subst_uri", "/^sip:(.*)@127\\.0\\.0\\.1$/sip:\\1@example.com;orig=1/i") == 1
    assert ctx.msg.ruri == "sip:+49301234@example.com;orig=1" and ctx.msg.uri.host == "example.com"
    assert h.call(ctx, "subst_uri", "/^sip:.*$/not a uri/") == -1 and ctx.msg.uri.host == "example.com"


async def test_replace_and_search_append() -> None:
    h = Harness(["textops"])
    ctx = h.ctx(request(extra="Subject: qq-qq-qq\n"))
    assert h.call(ctx, "replace", "qq-", "b-") == 1 and ctx.msg.header("Subject") == "b-qq-qq"
    assert h.call(ctx, "replace_all", "qq", "c") == 1 and ctx.msg.header("Subject") == "b-c-c"
    assert h.call(ctx, "search_append", "^Subject: b", "x") == 1 and ctx.msg.header("Subject") == "bx-c-c"
    ctx = h.ctx(request("PUBLISH", body="one two two"))
    assert h.call(ctx, "replace_body_all", "two", "three") == 1 and ctx.msg.body == b"one three three"


async def test_is_myself_takes_a_bare_domain_as_the_shipped_scripts_pass() -> None:
    from routescript.core.functions import is_myself

    h = Harness([])
    h.server.config.aliases.append("presence.example.com")
    ctx = h.ctx(request())
    assert is_myself(ctx, "127.0.0.1") == 1                     # is_myself("$rd")
    assert is_myself(ctx, "presence.example.com") == 1          # is_myself("$fd") with an alias
    assert is_myself(ctx, "127.0.0.1:5060") == 1 and is_myself(ctx, "127.0.0.1:5070") == -1
    assert is_myself(ctx, "127.0.0.1", 5060) == 1 and is_myself(ctx, "127.0.0.1", 5070) == -1
    assert is_myself(ctx, "192.0.2.1") == -1 and is_myself(ctx, "") == -1
