"""The core routing functions (routescript/core/routing.py), each compiled in a small script and run over
a parsed request: flags, branch flags, strip/prefix/strip_tail, force_rport, force_send_socket, log,
append_branch, $mf/$bf/$branch - and their load-time checks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from routescript.testing.route_run import TCP_SOCK, UDP_SOCK, load, request, run, source

from routescript.core.server import LoadError, Server
from routescript.script.flags import FlagNames


def errors_of(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "bad.cfg"
    path.write_text("socket = udp:127.0.0.1:5070\nroute {\n" + body + "}\n")
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    return [str(d) for d in info.value.diagnostics]


# --- flags ---------------------------------------------------------------------------------------------

def test_flag_names_take_bits_from_the_top_numbers_are_their_bit() -> None:
    names = FlagNames("message")
    assert names.bit("NAT") == 31 and names.bit("NAT") == 31     # same name, same bit
    assert names.bit(5) == 5 and names.bit("5") == 5
    assert names.bit("ACC") == 30
    assert names.names((1 << 31) | (1 << 5)) == "NAT 5"
    with pytest.raises(ValueError, match=r"numbered flags are 0\.\.31"):
        names.bit(32)
    with pytest.raises(ValueError, match="bad message flag name"):
        names.bit("two words")


def test_flag_names_run_out_after_32() -> None:
    names = FlagNames("branch")
    for i in range(32):
        names.bit(f"F{i}")
    with pytest.raises(ValueError, match="all 32 branch flags are in use"):
        names.bit("ONE_MORE")
    with pytest.raises(ValueError, match="taken by the flag named"):
        names.bit(0)


async def test_setflag_resetflag_isflagset(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        setflag(NAT); setflag(3); setflag("ACC");
        if (isflagset(NAT)) $var(a) = "nat";
        resetflag(3);
        if (!isflagset(3)) $var(b) = "no3";
        $var(mf) = $mf;
    }""")
    ctx = await run(server, request())
    assert ctx.vars == {"a": "nat", "b": "no3", "mf": "NAT ACC"}
    assert ctx.flags == (1 << 31) | (1 << 30)


async def test_branch_flags_both_argument_orders(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        setbflag(NAT);                   # branch 0: the request URI
        append_branch("sip:b1@10.0.0.7");
        setbflag(RTP, 1);                # 3.x: (flag, branch)
        setbflag(1, VIDEO);              # 2.x: (branch, flag)
        if (isbflagset(NAT, 0)) $var(a) = "b0";
        if (isbflagset(RTP, 1) && isbflagset(1, VIDEO)) $var(b) = "b1";
        if (!isbflagset(RTP, 2)) $var(c) = "no branch 2";
        resetbflag(1, VIDEO);
        $var(bf) = $bf;
        $var(br) = $branch(flags);
    }""")
    ctx = await run(server, request())
    registry = server.registry
    assert registry is not None
    nat, rtp = registry.branch_flags.mask("NAT"), registry.branch_flags.mask("RTP")
    assert ctx.bflags == nat
    # the appended branch took the request's branch flags then (OpenSIPS getb0flags), then RTP
    assert ctx.branches is not None and ctx.branches[0].flags == nat | rtp
    assert ctx.vars == {"a": "b0", "b": "b1", "c": "no branch 2", "bf": "NAT", "br": "NAT RTP"}


async def test_setbflag_on_a_branch_that_does_not_exist_is_false(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { if (!setbflag(NAT, 3)) $var(r) = "false"; }')
    ctx = await run(server, request())
    assert ctx.vars["r"] == "false" and "there is no branch 3" in caplog.text


def test_flag_arguments_checked_at_load(tmp_path: Path) -> None:
    texts = errors_of(tmp_path, '    setflag(32);\n    setflag($var(f));\n    isbflagset(NAT, 1, 2);\n')
    assert "bad.cfg:3:13: argument 1 of setflag(): message flag 32 does not exist" in texts[0]
    assert "bad.cfg:4:13: argument 1 of setflag() must be written out" in texts[1]
    assert "bad.cfg:5:5: isbflagset() takes at most 2 arguments (3 given)" in texts[2]


async def test_flag_bits_survive_reload_routes(tmp_path: Path) -> None:
    server = load(tmp_path, "route { setflag(A); }")
    registry = server.registry
    assert registry is not None
    bit = registry.msg_flags.bit("A")
    (tmp_path / "t.cfg").write_text("socket = udp:127.0.0.1:5070\nroute { setflag(B); setflag(A); }")
    assert [d for d in await server.reload_routes() if d.severity == "error"] == []
    ctx = await run(server, request())
    assert registry.msg_flags.bit("A") == bit and ctx.flags == (1 << bit) | registry.msg_flags.mask("B")


# --- Request-URI user -------------------------------------------------------------------------------

async def test_strip_prefix_strip_tail_rewrite_the_request_uri(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        strip(2); $var(a) = $rU;
        prefix("+"); $var(b) = $ru;
        strip_tail(4); $var(c) = $rU;
    }""")
    msg = request(ruri="sip:0049301234@127.0.0.1:5070;user=phone")
    ctx = await run(server, msg)
    assert ctx.vars == {"a": "49301234", "b": "sip:+49301234@127.0.0.1:5070;user=phone", "c": "+4930"}
    assert msg.ruri == "sip:+4930@127.0.0.1:5070;user=phone"      # what the sender puts on the wire
    assert msg.to_bytes().startswith(b"INVITE sip:+4930@127.0.0.1:5070;user=phone SIP/2.0\r\n")


async def test_strip_more_than_the_user_removes_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { strip(20); $var(u) = $ru; prefix("9"); $var(p) = $ru; }')
    ctx = await run(server, request(ruri="sip:123@example.com"))
    assert ctx.vars == {"u": "sip:example.com", "p": "sip:9@example.com"}
    assert "shorter: removed" in caplog.text


async def test_prefix_with_a_bad_character_is_false_with_a_log_line(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { if (!prefix("a@b")) $var(r) = "refused"; }')
    msg = request(ruri="sip:123@example.com")
    ctx = await run(server, msg)
    assert ctx.vars["r"] == "refused" and msg.ruri == "sip:123@example.com"
    assert "prefix()" in caplog.text and "bad user part" in caplog.text


# --- force_rport ---------------------------------------------------------------------------------------

async def test_force_rport_stamps_the_via_and_sends_replies_to_the_source_port(tmp_path: Path) -> None:
    server = load(tmp_path, "route { force_rport(); }")
    msg = request(via="SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKt1")
    src = source(host="10.0.0.5", port=40000)
    ctx = await run(server, msg, src)
    assert msg.via.param("rport") == "40000" and msg.via.received == "10.0.0.5"
    assert ctx.source is not None and ctx.source.reply_to is not None
    assert (ctx.source.reply_to.host, ctx.source.reply_to.port) == ("10.0.0.5", 40000)
    assert ctx.source.reply_to.socket == UDP_SOCK


async def test_force_rport_on_tcp_keeps_the_connection(tmp_path: Path) -> None:
    server = load(tmp_path, "route { force_rport(); }")
    msg = request(via="SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bKt1")
    src = source(TCP_SOCK, port=40001)
    ctx = await run(server, msg, src)
    assert msg.via.param("rport") == "40001"
    assert ctx.source is src       # replies go back on the connection, as they would without it


# --- force_send_socket ---------------------------------------------------------------------------------

async def test_force_send_socket_picks_our_socket(tmp_path: Path) -> None:
    server = load(tmp_path, 'route { force_send_socket("tcp:127.0.0.1:5070"); }')
    ctx = await run(server, request())
    assert ctx.send_socket == TCP_SOCK
    server = load(tmp_path, 'route { force_send_socket("127.0.0.1"); }', name="any.cfg")
    ctx = await run(server, request())
    assert ctx.send_socket == UDP_SOCK          # proto and port not written: the first that fits


async def test_force_send_socket_computed_at_run_time(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, """route {
        $var(s) = "udp:127.0.0.1:5070"; force_send_socket("$var(s)");
        $var(s) = "udp:10.1.1.1:5060";
        if (!force_send_socket("$var(s)")) $var(r) = "not ours";
    }""")
    ctx = await run(server, request())
    assert ctx.send_socket == UDP_SOCK and ctx.vars["r"] == "not ours"
    assert "we do not listen on udp:10.1.1.1:5060" in caplog.text


def test_force_send_socket_not_ours_is_a_load_error(tmp_path: Path) -> None:
    texts = errors_of(tmp_path, '    force_send_socket("tcp:127.0.0.1:5070");\n'
                                '    force_send_socket("x:y:z");\n')
    assert ("bad.cfg:3:23: argument 1 of force_send_socket(): we do not listen on "
            "tcp:127.0.0.1:5070 (our sockets: udp:127.0.0.1:5070)") in texts[0]
    assert "bad socket 'x:y:z'" in texts[1]


# --- log -------------------------------------------------------------------------------------------------

async def test_log_prints_its_text_as_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { log("plain\\n"); log(1, "a warning"); log("L_ERR", "an error"); }')
    with caplog.at_level(logging.DEBUG, logger="routescript.script"):
        await run(server, request())
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "routescript.script"]
    assert got == [(logging.DEBUG, "plain"), (logging.WARNING, "a warning"), (logging.ERROR, "an error")]


def test_log_text_with_variables_is_refused_at_load(tmp_path: Path) -> None:
    # OpenSIPS prints log()'s text as written; ours would expand it: refused, xlog() is for that
    texts = errors_of(tmp_path, '    log("uri $ru");\n')
    assert "bad.cfg:3:9: argument 1 of log() must be written out" in texts[0]


async def test_log_with_a_bad_level_is_false(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { if (!log("loud", "x")) $var(r) = "false"; }')
    ctx = await run(server, request())
    assert ctx.vars["r"] == "false" and "bad log level 'loud'" in caplog.text


# --- append_branch and $branch -------------------------------------------------------------------------

async def test_append_branch_without_uri_moves_the_request_branch(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        $du = "sip:10.0.0.9:5080"; setbflag(NAT); force_send_socket("tcp:127.0.0.1:5070");
        append_branch();
        $var(du) = $du;
        $var(b) = $(branch(uri)[0]) + " " + $(branch(duri)[0]) + " " + $(branch(socket)[0]);
    }""")
    msg = request(ruri="sip:bob@10.0.0.8")
    ctx = await run(server, msg)
    assert ctx.branches is not None and len(ctx.branches) == 1
    b = ctx.branches[0]
    assert (b.uri, b.dst_uri, b.socket) == ("sip:bob@10.0.0.8", "sip:10.0.0.9:5080", TCP_SOCK)
    assert b.flags != 0 and ctx.bflags == 0 and ctx.dst_uri is None and ctx.send_socket is None
    assert ctx.vars["b"] == "sip:bob@10.0.0.8 sip:10.0.0.9:5080 tcp:127.0.0.1:5070"
    assert ctx.vars.get("du") is None
    assert msg.ruri == "sip:bob@10.0.0.8"       # the request URI stays (branch 0 goes on)


async def test_append_branch_with_uri_and_q(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        $du = "sip:10.0.0.9";
        append_branch("sip:carol@10.0.0.10", "0.5");
        append_branch("sip:dave@10.0.0.11");
        $var(all) = $(branch(uri)[*]);
        $var(q) = $(branch(q)[0]);
    }""")
    ctx = await run(server, request())
    assert ctx.branches is not None
    assert [(b.uri, b.dst_uri, b.q) for b in ctx.branches] == [
        ("sip:carol@10.0.0.10", "sip:10.0.0.9", 0.5), ("sip:dave@10.0.0.11", "sip:10.0.0.9", None)]
    assert ctx.dst_uri == "sip:10.0.0.9"
    assert ctx.vars == {"all": "sip:carol@10.0.0.10, sip:dave@10.0.0.11", "q": "0.5"}


async def test_append_branch_bad_uri_and_too_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, """route {
        if (!append_branch("not a uri")) $var(bad) = 1;
        $var(i) = 0;
        while ($var(i) < 20) { if (!append_branch("sip:x@10.0.0.1")) break; $var(i) = $var(i) + 1; }
    }""")
    ctx = await run(server, request())
    assert ctx.vars["bad"] == 1 and ctx.vars["i"] == 11     # 12 destinations with the request URI
    assert "not a valid URI" in caplog.text and "12 branches already" in caplog.text


def test_branch_pvar_field_checked_at_load(tmp_path: Path) -> None:
    texts = errors_of(tmp_path, '    $var(x) = $branch(color);\n')
    assert "unknown field" in texts[0] and "bad.cfg:3:" in texts[0]


async def test_core_functions_run_in_every_route_kind(tmp_path: Path) -> None:
    # OpenSIPS ALL_ROUTES: a failure_route, branch_route and onreply_route may call them
    server = load(tmp_path, """route { setflag(A); }
    failure_route[f] { setflag(A); strip(1); append_branch(); }
    branch_route[b] { setbflag(B); force_send_socket("udp:127.0.0.1:5070"); }
    onreply_route[r] { if (isflagset(A)) log("x"); }
    """)
    assert server.script is not None
    ctx = await run(server, request(), route="branch", name="b")
    assert ctx.bflags != 0 and ctx.send_socket == UDP_SOCK


# --- Request-URI parts, $du, remove_branch --------------------------------------------------------------

async def test_uri_setters_and_their_2x_spellings(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        setuser("carol"); $var(a) = $ru;
        sethost("example.org"); $var(b) = $ru;
        setport("5080"); $var(c) = $ru;
        rewritehostport("10.0.0.1"); $var(d) = $ru;
        sethp("[::1]:5090"); $var(e) = $ru;
        setuserpass("dave:secret"); $var(f) = $ru;
        rewriteuri("sip:erin@example.net;transport=tcp"); $var(g) = $ru;
        revert_uri(); $var(h) = $ru;
    }""")
    msg = request(ruri="sip:bob@10.0.0.8:5070")
    ctx = await run(server, msg)
    assert ctx.vars == {
        "a": "sip:carol@10.0.0.8:5070", "b": "sip:carol@example.org:5070", "c": "sip:carol@example.org:5080",
        "d": "sip:carol@10.0.0.1", "e": "sip:carol@[::1]:5090", "f": "sip:dave:secret@[::1]:5090",
        "g": "sip:erin@example.net;transport=tcp", "h": "sip:bob@10.0.0.8:5070"}
    assert msg.ruri == "sip:bob@10.0.0.8:5070"


async def test_dst_uri_functions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, """route {
        if (!isdsturiset()) $var(a) = "unset";
        setdsturi("sip:10.0.0.9:5080;transport=tcp");
        if (isduriset()) $var(b) = $du;
        resetdsturi();
        if (!isdsturiset()) $var(c) = "reset";
        if (!setduri("not a uri")) $var(d) = "refused";
    }""")
    ctx = await run(server, request())
    assert ctx.vars == {"a": "unset", "b": "sip:10.0.0.9:5080;transport=tcp", "c": "reset", "d": "refused"}
    assert ctx.dst_uri is None and "not a valid URI" in caplog.text


async def test_remove_branch(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        append_branch("sip:a@10.0.0.1"); append_branch("sip:b@10.0.0.2"); append_branch("sip:c@10.0.0.3");
        remove_branch(1);
        if (!remove_branch(5)) $var(r) = "none";
    }""")
    ctx = await run(server, request())
    assert ctx.branches is not None and [b.uri for b in ctx.branches] == ["sip:a@10.0.0.1", "sip:c@10.0.0.3"]
    assert ctx.vars["r"] == "none"


async def test_two_flags_to_a_branch_flag_function_is_false(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { if (!setbflag(NAT, RTP)) $var(r) = "no"; }')
    ctx = await run(server, request())
    assert ctx.vars["r"] == "no" and ctx.bflags == 0 and "the 2.x order is (branch, flag)" in caplog.text


async def test_force_send_socket_without_protocol_prefers_udp(tmp_path: Path) -> None:
    server = load(tmp_path, 'route { force_send_socket("127.0.0.1:5070"); }',
                  sockets="socket = tcp:127.0.0.1:5070\nsocket = udp:127.0.0.1:5070\n")
    server.sockets = [TCP_SOCK, UDP_SOCK]
    ctx = await run(server, request())
    assert ctx.send_socket == UDP_SOCK          # OpenSIPS find_si: UDP first when no protocol is given


async def test_msg_flag_and_branch_flag_pvars(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        $msg.flag(NAT) = 1;
        if (isflagset(NAT)) $var(a) = $msg.flag(NAT);
        $msg.flag(NAT) = 0;
        $var(b) = $msg.flag(NAT);
        setbflag(RTP);
        $var(c) = $branch.flag(RTP);
        append_branch("sip:x@10.0.0.1");
        $(branch.flag(VIDEO)[1]) = 1;
        if (isbflagset(VIDEO, 1)) $var(d) = $(branch.flag(VIDEO)[1]);
    }""")
    ctx = await run(server, request())
    assert ctx.vars == {"a": 1, "b": 0, "c": 1, "d": 1}
    assert ctx.flags == 0


def test_flag_pvar_names_checked_at_load(tmp_path: Path) -> None:
    texts = errors_of(tmp_path, '    $var(x) = $msg.flag(40);\n')
    assert "bad.cfg:3:15: $msg.flag(40): message flag 40 does not exist" in texts[0]


# --- serialize_branches / next_branches ----------------------------------------------------------------

SERIAL = """route {
    append_branch("sip:b@10.0.0.2", "0.5");
    append_branch("sip:c@10.0.0.3", "1");
    append_branch("sip:d@10.0.0.4", "0.5");
    serialize_branches(1);
    $var(n) = 0;
    while (next_branches() > 0) {
        $var(n) = $var(n) + 1;
        $avp(round) = $ru + " " + $(branch(uri)[*]);
        $var(last) = $rc;
        if ($var(last) == 2) break;
    }
}"""


async def test_serialize_then_next_branches_by_q_class(tmp_path: Path) -> None:
    server = load(tmp_path, SERIAL)
    msg = request(ruri="sip:a@10.0.0.1")            # no q: ranks below every given q
    ctx = await run(server, msg)
    # classes in q order: 1 (c), 0.5 (b, d in their order), unspecified (a); $avp values newest first
    rounds = ctx.avps["round"][::-1]
    assert rounds == ["sip:c@10.0.0.3 ", "sip:b@10.0.0.2 sip:d@10.0.0.4",
                      "sip:a@10.0.0.1 sip:d@10.0.0.4"]   # t_relay would have used round 2's branch
    assert ctx.vars["n"] == 3 and ctx.vars["last"] == 2
    assert "serial_branch" not in ctx.avps


async def test_serialize_keep_order_one_at_a_time(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        $du = "sip:10.0.0.9"; setbflag(NAT);
        append_branch("sip:b@10.0.0.2", "0.1");
        append_branch("sip:c@10.0.0.3", "0.9");
        serialize_branches(1, 1);
        next_branches(); $var(r1) = $ru + " " + $du; $var(n1) = $bf;
        next_branches(); $var(r2) = $ru;
        $var(rc3) = next_branches(); $var(r3) = $ru;
        $var(rc4) = next_branches();
    }""")
    ctx = await run(server, request(ruri="sip:a@10.0.0.1"))
    assert ctx.vars == {"r1": "sip:a@10.0.0.1 sip:10.0.0.9", "n1": "NAT", "r2": "sip:b@10.0.0.2",
                        "rc3": 2, "r3": "sip:c@10.0.0.3", "rc4": -1}


async def test_serialize_with_nothing_to_do(tmp_path: Path) -> None:
    server = load(tmp_path, """route {
        serialize_branches(1);                       # no branch
        append_branch("sip:b@10.0.0.2");             # every q the same (none)
        if (serialize_branches(1)) $var(r) = "true";
        if (!next_branches()) $var(n) = "none";
    }""")
    ctx = await run(server, request())
    assert ctx.vars == {"r": "true", "n": "none"} and ctx.branches is not None and len(ctx.branches) == 1


def test_next_branches_only_in_request_and_failure_routes(tmp_path: Path) -> None:
    texts = errors_of(tmp_path, "}\nbranch_route[b] {\n    next_branches();\n")
    assert "bad.cfg:5:5: next_branches() cannot be used in branch_route" in texts[0]


async def test_msg_flag_refuses_a_value_that_is_not_a_number(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    server = load(tmp_path, 'route { $msg.flag(NAT) = "x"; $var(after) = 1; }')
    ctx = await run(server, request())
    assert ctx.flags == 0 and "after" not in ctx.vars
    assert "$msg.flag: the value must be an integer, got 'x'" in caplog.text
