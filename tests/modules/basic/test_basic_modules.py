"""Every function of the basic modules, on real messages, through a socket-less server."""

from __future__ import annotations

import logging

import pytest
from basicmods_harness import SOCK, Harness, request

from routescript.core.module import ConfigError

pytestmark = pytest.mark.asyncio


# --- sl / signaling / tm ------------------------------------------------------------------------------

async def test_sl_send_reply_stateless_with_stable_to_tag() -> None:
    h = Harness(["sl"])
    ctx = h.ctx(request())
    assert h.call(ctx, "sl_send_reply", 200, "OK") == 1
    ctx2 = h.ctx(request())
    assert h.call(ctx2, "sl_send_reply", 200, "OK") == 1
    r1, r2 = h.transport.replies
    assert r1.status == 200 and r1.reason == "OK"
    assert r1.to.tag and r1.to.tag == r2.to.tag  # a retransmission gets the very same reply
    assert ctx.replied and ctx.transaction is None


async def test_sl_send_reply_code_checked_at_load_time() -> None:
    h = Harness(["sl"])
    with pytest.raises(ValueError, match=r"outside 100\.\.699"):
        h.call(h.ctx(request()), "sl_send_reply", 99, "x")


async def test_sl_never_answers_ack() -> None:
    h = Harness(["sl"])
    assert h.call(h.ctx(request("ACK")), "sl_send_reply", 200, "OK") == 1
    assert h.transport.replies == []


async def test_sl_reply_error_defaults_to_500_and_uses_parse_error() -> None:
    from routescript.sip import ParseError

    h = Harness(["sl"])
    assert h.call(h.ctx(request()), "sl_reply_error") == 1
    ctx = h.ctx(request())
    ctx.error = ParseError("Bad Event header")
    h.call(ctx, "sl_reply_error")
    assert [(r.status, r.reason) for r in h.transport.replies] == [
        (500, "Server Internal Error"), (400, "Bad Event header")]


async def test_server_header_on_core_replies() -> None:
    h = Harness(["sl"])
    h.server.config.values["server_header"] = "Server: routescript test"
    h.call(h.ctx(request()), "sl_send_reply", 200, "OK")
    assert h.transport.replies[0].header("Server") == "routescript test"


async def test_t_newtran_then_retransmission_is_absorbed() -> None:
    h = Harness(["sl", "tm", "signaling"])
    ctx = h.ctx(request("SUBSCRIBE"))
    assert h.call(ctx, "t_newtran") == 1
    assert ctx.transaction is not None
    assert h.call(ctx, "t_check_trans") == 1
    assert h.call(ctx, "send_reply", 202, "Accepted") == 1   # through the transaction
    assert h.transport.replies[-1].status == 202
    again = h.ctx(request("SUBSCRIBE"))
    assert h.server.transactions.lookup(again.msg, again.source) is not None
    assert h.call(again, "t_check_trans") == 0               # retransmission: the script stops
    assert len(h.transport.replies) == 1                     # the script's one reply ...
    resent = [data for data, dest in h.transport.sent
              if (dest.host, dest.port) == (again.source.remote_host, again.source.remote_port)]
    assert len(resent) == 2                                  # ... resent for lookup and t_check_trans
    assert resent[0].startswith(b"SIP/2.0 202 ") and resent[0] == h.transport.replies[0].to_bytes()


async def test_t_reply_makes_the_transaction_and_refuses_second_final() -> None:
    h = Harness(["tm"])
    ctx = h.ctx(request("PUBLISH"))
    assert h.call(ctx, "t_check_trans") == -1
    assert h.call(ctx, "t_reply", 200, "OK") == 1
    assert ctx.transaction is not None
    assert h.call(ctx, "t_reply", 500, "Again") == -1
    assert [r.status for r in h.transport.replies] == [200]


async def test_signaling_without_transaction_is_stateless() -> None:
    h = Harness(["signaling"])
    ctx = h.ctx(request())
    assert h.call(ctx, "send_reply", 405, "Method Not Allowed") == 1
    assert ctx.transaction is None
    assert h.server.transactions.lookup(ctx.msg, ctx.source) is None
    assert h.transport.replies[0].status == 405


async def test_t_relay_is_built_and_fails_loudly_without_a_sender(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(["tm"])
    assert "t_relay" not in h.server.modules.get("tm").unbuilt
    with caplog.at_level(logging.ERROR, logger="routescript.tm"):
        assert await h.call(h.ctx(request("INVITE")), "t_relay") == -1
    assert "t_relay" in caplog.text and "no relay sender" in caplog.text


async def test_tm_params_feed_transaction_layer() -> None:
    h = Harness(["tm"], [("tm", "fr_timeout", 7), ("tm", "T1_timer", "250")])
    opts = h.server.modules.get("tm").transaction_options()
    assert opts["timer_f"] == 7.0 and opts["t1"] == 0.25
    with pytest.raises(ConfigError, match="positive"):
        Harness(["tm"], [("tm", "fr_timeout", 0)])


# --- maxfwd -------------------------------------------------------------------------------------------

async def test_maxfwd_add_decrement_zero_and_limit() -> None:
    h = Harness(["maxfwd"], [("maxfwd", "max_limit", 16)])
    ctx = h.ctx(request())
    assert h.call(ctx, "mf_process_maxfwd_header", 10) == 2
    assert ctx.msg.header("Max-Forwards") == "10"
    ctx = h.ctx(request(extra="Max-Forwards: 70\n"))
    assert h.call(ctx, "mf_process_maxfwd_header", 10) == 1
    assert ctx.msg.header("Max-Forwards") == "16"          # capped at max_limit
    ctx = h.ctx(request(extra="Max-Forwards: 5\n"))
    assert h.call(ctx, "mf_process_maxfwd_header", 10) == 1
    assert ctx.msg.header("Max-Forwards") == "4"
    ctx = h.ctx(request(extra="Max-Forwards: 0\n"))
    assert h.call(ctx, "mf_process_maxfwd_header", 10) == -1
    assert h.transport.replies == []                        # the script answers 483, not the module
    ctx = h.ctx(request(extra="Max-Forwards: ten\n"))
    assert h.call(ctx, "mf_process_maxfwd_header", 10) == -2


async def test_is_maxfwd_lt_and_bad_param() -> None:
    h = Harness(["maxfwd"])
    assert h.call(h.ctx(request(extra="Max-Forwards: 3\n")), "is_maxfwd_lt", 5) == 1
    assert h.call(h.ctx(request(extra="Max-Forwards: 9\n")), "is_maxfwd_lt", 5) == -1
    assert h.call(h.ctx(request()), "is_maxfwd_lt", 5) == -2
    with pytest.raises(ConfigError):
        Harness(["maxfwd"], [("maxfwd", "max_limit", 300)])
    with pytest.raises(ValueError):
        h.call(h.ctx(request()), "mf_process_maxfwd_header", 0)


# --- sipmsgops / textops ------------------------------------------------------------------------------

@pytest.mark.parametrize("mod", ["sipmsgops", "textops"])
async def test_is_method_has_totag_is_present_hf(mod: str) -> None:
    h = Harness([mod])
    ctx = h.ctx(request("SUBSCRIBE", extra="Event: presence\n"))
    assert h.call(ctx, "is_method", "PUBLISH|SUBSCRIBE") == 1
    assert h.call(ctx, "is_method", "INVITE") == -1
    assert h.call(ctx, "is_method", "subscribe") == 1
    assert h.call(ctx, "has_totag") == -1
    assert h.call(h.ctx(request(to_tag="x9")), "has_totag") == 1
    assert h.call(ctx, "is_present_hf", "Event") == 1
    assert h.call(ctx, "is_present_hf", "o") == 1            # compact form of Event
    assert h.call(ctx, "is_present_hf", "Expires") == -1
    with pytest.raises(ValueError):
        h.call(ctx, "is_method", "A B")


async def test_append_insert_remove_hf() -> None:
    h = Harness(["sipmsgops"])
    ctx = h.ctx(request(extra="X-One: 1\nX-Two: 2\n"))
    assert h.call(ctx, "append_hf", "P-Hint: presence\\r\\n") == 1
    assert ctx.msg.header("P-Hint") == "presence"
    assert h.call(ctx, "insert_hf", "P-First: yes\r\n") == 1
    assert ctx.msg.headers[0].name == "P-First"
    assert h.call(ctx, "remove_hf", "P-Hint") == 1
    assert h.call(ctx, "remove_hf", "P-Hint") == -1
    assert h.call(ctx, "remove_hf", "X-*", "g") == 1
    assert not ctx.msg.has_header("X-One") and not ctx.msg.has_header("X-Two")
    # a value built at run time ($var) is checked at run time; a literal at load time
    assert h.functions["append_hf"].impl(ctx, "no colon here") == -1
    with pytest.raises(ValueError):
        h.call(ctx, "append_hf", "bad name: x\r\n")
    assert b"P-First: yes\r\n" in ctx.msg.to_bytes()


async def test_search_and_search_body() -> None:
    h = Harness(["textops"])
    ctx = h.ctx(request("PUBLISH", extra="Event: presence\nContent-Type: application/pidf+xml\n",
                        body="<basic>open</basic>"))
    assert h.call(ctx, "search", "^event: *presence") == 1     # case-insensitive, ^ at line start
    assert h.call(ctx, "search", "dialog") == -1
    assert h.call(ctx, "search_body", "<basic>open") == 1
    assert h.call(ctx, "search_body", "Event") == -1
    assert h.call(h.ctx(request()), "search_body", ".") == -1
    with pytest.raises(ValueError):
        h.call(ctx, "search", "(")


# --- is_myself / rr -----------------------------------------------------------------------------------

async def test_is_myself_sockets_and_alias() -> None:
    from routescript.core.functions import is_myself

    h = Harness([])
    h.server.config.aliases.append("presence.example.com")
    ctx = h.ctx(request())
    assert is_myself(ctx, "sip:127.0.0.1") == 1                # no port = 5060
    assert is_myself(ctx, "sip:bob@127.0.0.1:5060;transport=udp") == 1
    assert is_myself(ctx, "sip:127.0.0.1:5070") == -1
    assert is_myself(ctx, "sip:10.0.0.1") == -1
    assert is_myself(ctx, "sip:alice@presence.example.com:5080") == 1
    assert is_myself(ctx, "not a uri") == -1


async def test_loose_route_pops_our_route() -> None:
    h = Harness(["rr"])
    ctx = h.ctx(request("SUBSCRIBE", to_tag="t1",
                        extra="Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.9;lr>\n"))
    assert h.call(ctx, "loose_route") == 1
    assert ctx.msg.header_values("Route") == ["<sip:10.0.0.9;lr>"]
    ctx = h.ctx(request("SUBSCRIBE", to_tag="t1", extra="Route: <sip:127.0.0.1;lr>\n"))
    assert h.call(ctx, "loose_route") == 1
    assert not ctx.msg.has_header("Route")
    ctx = h.ctx(request("SUBSCRIBE", to_tag="t1", extra="Route: <sip:10.0.0.9;lr>\n"))
    assert h.call(ctx, "loose_route") == 1 and ctx.dst_uri == "sip:10.0.0.9;lr"
    assert h.call(h.ctx(request("SUBSCRIBE", to_tag="t1")), "loose_route") == -1


async def test_record_route() -> None:
    h = Harness(["rr"])
    ctx = h.ctx(request("SUBSCRIBE"))
    assert h.call(ctx, "record_route") == 1
    assert ctx.msg.header("Record-Route") is None     # added to what is relayed, once its socket is known
    assert ctx.send_hooks is not None and len(ctx.send_hooks) == 1
    out = h.ctx(request("SUBSCRIBE")).msg      # the copy the sender would build
    ctx.send_hooks[0](out, SOCK)
    assert out.header("Record-Route") == f"<sip:{SOCK.host};lr;ftag=a1>"   # 5060 left out, as OpenSIPS


# --- xlog ---------------------------------------------------------------------------------------------

async def test_xlog_levels(caplog: pytest.LogCaptureFixture) -> None:
    from routescript.core.functions import xdbg, xlog, xlog_level_of

    h = Harness(["xlog"])
    ctx = h.ctx(request())
    with caplog.at_level(logging.DEBUG, logger="routescript.xlog"):
        assert xlog(ctx, "hello world\n") == 1
        assert xlog(ctx, "L_INFO", "info line") == 1
        assert xdbg(ctx, "debug line") == 1
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name == "routescript.xlog"}
    assert levels == {"hello world": logging.ERROR, "info line": logging.INFO, "debug line": logging.DEBUG}
    assert xlog_level_of("L_WARN") == 1 and xlog_level_of("L_NOTICE") == 2 and xlog_level_of("4") == 4
    assert xlog_level_of("L_Ixx") == 3  # OpenSIPS reads the third letter


async def test_transport_and_db_modules_accept_their_params() -> None:
    h = Harness(["proto_udp", "proto_tcp", "db_sqlite", "db_postgres"],
                [("proto_tcp", "tcp_crlf_pingpong", 1), ("db_sqlite", "alloc_limit", "5"),
                 ("proto_tcp", "tcp_send_timeout", 50), ("db_postgres", "exec_query_threshold", 0)])
    assert h.server.modules.get("db_sqlite").param("alloc_limit") == 5
    assert set(h.server.modules.instances) == {"proto_udp", "proto_tcp", "db_sqlite", "db_postgres"}


@pytest.mark.parametrize("module,param,value,needle", [
    ("proto_udp", "udp_port", 5070, "write the port in the line"),
    ("proto_tcp", "tcp_port", 5070, "write the port in the line"),
    ("proto_udp", "trace_on", 1, "SIP tracing"),
    ("proto_tcp", "trace_destination", "hep_dst", "SIP tracing"),
    ("proto_tcp", "tcp_crlf_drop", 1, "always answered"),
    ("proto_tcp", "tcp_crlf_pingpong", 0, "always answered"),
    ("db_sqlite", "load_extension", "/usr/lib/mod_spatialite.so", "loading SQLite extensions"),
    ("db_postgres", "use_tls", 1, "TLS to the PostgreSQL server"),
])
async def test_transport_and_db_modules_refuse_what_they_do_not_do(module: str, param: str, value: object,
                                                                   needle: str) -> None:
    with pytest.raises(Exception, match=needle):
        Harness([module], [(module, param, value)])


async def test_db_mysql_accepts_opensips_params_and_refuses_tls() -> None:
    h = Harness(["db_mysql"], [("db_mysql", "ping_interval", 60), ("db_mysql", "timeout_interval", 3)])
    assert h.server.modules.get("db_mysql").param("ping_interval") == 60
    with pytest.raises(Exception, match="TLS to the MySQL server is not implemented"):
        Harness(["db_mysql"], [("db_mysql", "use_tls", 1)])
