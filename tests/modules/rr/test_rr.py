"""rr over real scripts and parsed requests: Record-Route through ctx.send_hooks (a fake sender calls the
hooks with the socket a request leaves by), loose_route over one, two (double Record-Route) and strict
Routes, preloaded routes, add_rr_param, check_route_param, is_direction, $rr_params."""

from __future__ import annotations

from pathlib import Path

import pytest
from routescript.testing.route_run import TCP_SOCK, UDP_SOCK, load, request, run, source

from routescript.core.server import LoadError, Server
from routescript.script.context import MsgContext
from routescript.sip import SIPRequest, SocketInfo, parse_message

RR = 'loadmodule "rr.so"\n'


def rr_script(tmp_path: Path, body: str, *, params: str = "", name: str = "rr.cfg") -> Server:
    return load(tmp_path, RR + params + body, name=name)


def relay(ctx: MsgContext, sock: SocketInfo | None) -> SIPRequest:
    """What a sender does: copy the request, call every send hook with the copy and its socket."""
    assert isinstance(ctx.msg, SIPRequest)
    out = parse_message(ctx.msg.to_bytes())
    assert isinstance(out, SIPRequest)
    for hook in ctx.send_hooks or ():
        hook(out, sock)
    return out


# --- record_route ----------------------------------------------------------------------------------------

async def test_record_route_one_entry_when_in_and_out_are_one_socket(tmp_path: Path) -> None:
    server = rr_script(tmp_path, "route { record_route(); }")
    ctx = await run(server, request(extra="Record-Route: <sip:upstream.example.com;lr>\r\n"))
    assert ctx.msg is not None and ctx.msg.header_all("Record-Route") == ["<sip:upstream.example.com;lr>"]
    out = relay(ctx, UDP_SOCK)
    assert out.header_all("Record-Route") == ["<sip:127.0.0.1:5070;lr;ftag=a1>",
                                              "<sip:upstream.example.com;lr>"]


async def test_double_record_route_udp_in_tcp_out(tmp_path: Path) -> None:
    server = rr_script(tmp_path, "route { record_route(); }")
    ctx = await run(server, request(), source(UDP_SOCK))
    out = relay(ctx, TCP_SOCK)
    # the sending socket on top (the callee's first Route), the receiving one under it
    assert out.header_all("Record-Route") == [
        "<sip:127.0.0.1:5070;transport=tcp;r2=on;lr;ftag=a1>",
        "<sip:127.0.0.1:5070;r2=on;lr;ftag=a1>"]


async def test_double_rr_disabled_gives_one_entry(tmp_path: Path) -> None:
    server = rr_script(tmp_path, "route { record_route(); }",
                       params='modparam("rr", "enable_double_rr", 0)\n')
    ctx = await run(server, request(), source(UDP_SOCK))
    assert relay(ctx, TCP_SOCK).header_all("Record-Route") == [
        "<sip:127.0.0.1:5070;transport=tcp;lr;ftag=a1>"]


async def test_no_fromtag_and_username(tmp_path: Path) -> None:
    server = rr_script(tmp_path, "route { record_route(); }",
                       params='modparam("rr", "append_fromtag", 0)\nmodparam("rr", "add_username", 1)\n')
    ctx = await run(server, request(ruri="sip:bob@example.com"))
    assert relay(ctx, UDP_SOCK).header_all("Record-Route") == ["<sip:bob@127.0.0.1:5070;lr>"]


async def test_default_port_left_out_and_advertised_address(tmp_path: Path) -> None:
    sock = SocketInfo("udp", "127.0.0.1", 5060)
    server = load(tmp_path, RR + "route { record_route(); }",
                  sockets="socket = udp:127.0.0.1:5060 as proxy.example.com:5080\n")
    server.sockets = [sock]
    ctx = await run(server, request(), source(sock))
    assert relay(ctx, sock).header_all("Record-Route") == ["<sip:proxy.example.com:5080;lr;ftag=a1>"]
    server = load(tmp_path, RR + "route { record_route(); }", sockets="socket = udp:127.0.0.1:5060\n",
                  name="plain.cfg")
    server.sockets = [sock]
    ctx = await run(server, request(), source(sock))
    assert relay(ctx, sock).header_all("Record-Route") == ["<sip:127.0.0.1;lr;ftag=a1>"]


async def test_rr_params_before_and_after_record_route(tmp_path: Path) -> None:
    server = rr_script(tmp_path, """route {
        add_rr_param(";before=1");
        record_route(";own=x");
        add_rr_param("after=2");
    }""")
    ctx = await run(server, request(), source(UDP_SOCK))
    assert relay(ctx, TCP_SOCK).header_all("Record-Route") == [
        "<sip:127.0.0.1:5070;transport=tcp;r2=on;lr;ftag=a1;own=x;before=1;after=2>",
        "<sip:127.0.0.1:5070;r2=on;lr;ftag=a1;own=x;before=1;after=2>"]


async def test_second_record_route_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = rr_script(tmp_path, 'route { record_route(); if (!record_route()) $var(r) = "no"; }')
    ctx = await run(server, request())
    assert ctx.vars["r"] == "no" and "double attempt to record-route" in caplog.text
    assert ctx.send_hooks is not None and len(ctx.send_hooks) == 1
    assert len(relay(ctx, UDP_SOCK).header_all("Record-Route")) == 1


async def test_bad_rr_params_are_false(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = rr_script(tmp_path, """route {
        if (!add_rr_param("a b")) $var(a) = "no";
        if (!record_route(";x=<y>")) $var(b) = "no";
    }""")
    ctx = await run(server, request())
    assert ctx.vars == {"a": "no", "b": "no"} and "bad Record-Route parameters" in caplog.text
    assert ctx.send_hooks is None


async def test_record_route_preset(tmp_path: Path) -> None:
    server = rr_script(tmp_path, 'route { record_route_preset("1.2.3.4:5090"); add_rr_param(";p=1"); }')
    ctx = await run(server, request())
    assert relay(ctx, UDP_SOCK).header_all("Record-Route") == ["<sip:1.2.3.4:5090;ftag=a1;lr;p=1>"]
    server = rr_script(tmp_path, 'route { record_route_preset("10.0.0.1", "192.168.0.1:5062"); }',
                       name="two.cfg")
    ctx = await run(server, request())
    assert relay(ctx, TCP_SOCK).header_all("Record-Route") == [
        "<sip:10.0.0.1;ftag=a1;lr>", "<sip:192.168.0.1:5062;ftag=a1;lr>"]


async def test_record_route_preset_two_without_double_rr(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    server = rr_script(tmp_path, 'route { if (!record_route_preset("a.example", "b.example")) $var(r) = 1; }',
                       params='modparam("rr", "enable_double_rr", 0)\n')
    ctx = await run(server, request())
    assert ctx.vars["r"] == 1 and ctx.send_hooks is None and "enable_double_rr is 0" in caplog.text


async def test_record_route_in_branch_route(tmp_path: Path) -> None:
    server = rr_script(tmp_path, "route { } branch_route[b] { record_route(); }")
    ctx = await run(server, request(), route="branch", name="b")
    assert relay(ctx, UDP_SOCK).header("Record-Route") == "<sip:127.0.0.1:5070;lr;ftag=a1>"


# --- route masks and load-time checks ------------------------------------------------------------------

def test_route_kinds_and_arguments_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(RR + 'route { is_direction("sideways"); }\n'
                         'failure_route[f] { loose_route(); check_route_param("x"); record_route(); }\n'
                         'onreply_route[r] { record_route(); }\n')
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    texts = [str(d).splitlines()[0] for d in info.value.diagnostics]
    assert any("bad.cfg:2:22: argument 1 of is_direction(): unknown direction 'sideways'" in t for t in texts)
    assert any("bad.cfg:3:20: loose_route() cannot be used in failure_route" in t for t in texts)
    assert any("bad.cfg:3:35: check_route_param() cannot be used in failure_route" in t for t in texts)
    assert any("bad.cfg:4:20: record_route() cannot be used in onreply_route" in t for t in texts)
    assert len(texts) == 4


def test_is_direction_needs_append_fromtag(tmp_path: Path) -> None:
    path = tmp_path / "dir.cfg"
    path.write_text(RR + 'modparam("rr", "append_fromtag", 0)\nroute { is_direction("upstream"); }\n')
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    assert "dir.cfg:3:9: is_direction(): is_direction() reads the ;ftag=" in str(info.value.diagnostics[0])


# --- loose_route -------------------------------------------------------------------------------------

LOOSE = """route {
    $var(rc) = 0;
    loose_route();
    $var(rc) = $rc;
    $var(p) = $rr_params;
    if (check_route_param("nat=yes")) $var(nat) = 1;
    if (is_direction("downstream")) $var(dir) = "down";
    if (is_direction("upstream")) $var(dir) = "up";
}"""


async def test_loose_route_removes_ours_and_sets_the_next_hop(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:bob@10.0.0.20:5080", to_tag="b1",
                  extra="Route: <sip:127.0.0.1:5070;lr;ftag=a1;nat=yes>, <sip:10.0.0.9;lr>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars == {"rc": 1, "p": "lr;ftag=a1;nat=yes", "nat": 1, "dir": "down"}
    assert msg.header_all("Route") == ["<sip:10.0.0.9;lr>"]
    assert ctx.dst_uri == "sip:10.0.0.9;lr" and msg.ruri == "sip:bob@10.0.0.20:5080"
    assert ctx.send_socket == UDP_SOCK            # single Record-Route: back out the way it came


async def test_loose_route_upstream_when_the_callee_sends(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:alice@10.0.0.5:5062", to_tag="a1", from_tag="b1",
                  extra="Route: <sip:127.0.0.1:5070;lr;ftag=a1>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars == {"rc": 1, "p": "lr;ftag=a1", "dir": "up"}
    assert not msg.has_header("Route") and ctx.dst_uri is None   # routed by the Request-URI


async def test_loose_route_double_record_route_removes_both(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:bob@10.0.0.20", to_tag="b1", extra=(
        "Route: <sip:127.0.0.1:5070;r2=on;lr;ftag=a1>\r\n"
        "Route: <sip:127.0.0.1:5070;transport=tcp;r2=on;lr;ftag=a1>, <sip:10.0.0.9;lr>\r\n"))
    ctx = await run(server, msg, source(UDP_SOCK))
    assert ctx.vars["rc"] == 1 and ctx.vars["p"] == "r2=on;lr;ftag=a1"
    assert msg.header_all("Route") == ["<sip:10.0.0.9;lr>"]
    assert ctx.send_socket == TCP_SOCK            # the socket our second entry names
    assert ctx.dst_uri == "sip:10.0.0.9;lr"


async def test_loose_route_next_hop_is_a_strict_router(tmp_path: Path) -> None:
    # RFC 3261 16.6 step 6: the strict router goes into the Request-URI, the Request-URI last in Route
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:bob@10.0.0.20", to_tag="b1",
                  extra="Route: <sip:127.0.0.1:5070;lr;ftag=a1>, <sip:10.0.0.9>, <sip:10.0.0.10;lr>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1
    assert msg.ruri == "sip:10.0.0.9" and ctx.dst_uri is None
    assert msg.header_all("Route") == ["<sip:10.0.0.10;lr>", "<sip:bob@10.0.0.20>"]


async def test_loose_route_after_a_strict_router(tmp_path: Path) -> None:
    # RFC 3261 16.4: the Request-URI is our Record-Route: the last Route becomes the Request-URI
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:127.0.0.1:5070;lr;ftag=a1;nat=yes", to_tag="b1",
                  extra="Route: <sip:10.0.0.9;lr>, <sip:bob@10.0.0.20:5090>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1 and ctx.vars["p"] == "lr;ftag=a1;nat=yes" and ctx.vars["nat"] == 1
    assert msg.ruri == "sip:bob@10.0.0.20:5090"
    assert msg.header_all("Route") == ["<sip:10.0.0.9;lr>"] and ctx.dst_uri == "sip:10.0.0.9;lr"
    assert ctx.send_socket == UDP_SOCK
    assert msg.to_bytes().startswith(b"BYE sip:bob@10.0.0.20:5090 SIP/2.0\r\n")


async def test_loose_route_strict_after_strict(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:127.0.0.1:5070", to_tag="b1",
                  extra="Route: <sip:10.0.0.9>, <sip:bob@10.0.0.20>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1 and msg.ruri == "sip:10.0.0.9"
    assert msg.header_all("Route") == ["<sip:bob@10.0.0.20>"] and ctx.dst_uri is None


async def test_loose_route_preloaded(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    # an initial request whose only Route is us: no route set (false), the Route removed
    msg = request("INVITE", ruri="sip:bob@example.com", extra="Route: <sip:127.0.0.1:5070;lr>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == -1 and not msg.has_header("Route") and ctx.dst_uri is None
    assert ctx.send_socket is None                # a preloaded route forces no socket
    # ... with a next hop after us: routed by it
    msg = request("INVITE", ruri="sip:bob@example.com",
                  extra="Route: <sip:127.0.0.1:5070;lr>, <sip:edge.example.com;lr>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1 and ctx.dst_uri == "sip:edge.example.com;lr"
    assert msg.header_all("Route") == ["<sip:edge.example.com;lr>"] and ctx.send_socket is None


async def test_loose_route_top_route_not_ours(tmp_path: Path) -> None:
    server = rr_script(tmp_path, LOOSE)
    msg = request("BYE", ruri="sip:bob@10.0.0.20", to_tag="b1", extra="Route: <sip:10.0.0.9;lr>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1 and ctx.dst_uri == "sip:10.0.0.9;lr"
    assert msg.header_all("Route") == ["<sip:10.0.0.9;lr>"]          # kept: it is the next hop's
    assert "p" not in ctx.vars and "nat" not in ctx.vars and ctx.vars["dir"] == "down"


async def test_loose_route_our_contact_with_our_route(tmp_path: Path) -> None:
    # a request for us (our Contact) that also carries our Route: the Route is removed, the request
    # stays ours (routescript's choice; OpenSIPS would take it as coming from a strict router)
    server = rr_script(tmp_path, LOOSE)
    msg = request("SUBSCRIBE", ruri="sip:presence@127.0.0.1:5070", to_tag="b1",
                  extra="Route: <sip:127.0.0.1:5070;lr;ftag=a1>\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == 1 and msg.ruri == "sip:presence@127.0.0.1:5070"
    assert not msg.has_header("Route") and ctx.dst_uri is None


async def test_loose_route_without_or_with_bad_route(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    server = rr_script(tmp_path, LOOSE)
    ctx = await run(server, request("BYE", to_tag="b1"))
    assert ctx.vars["rc"] == -1 and "p" not in ctx.vars and ctx.dst_uri is None
    assert "nat" not in ctx.vars                  # check_route_param before any Route of ours: false
    msg = request("BYE", to_tag="b1", extra="Route: <sip:10.0.0.9;lr\r\n")
    ctx = await run(server, msg)
    assert ctx.vars["rc"] == -1 and "loose_route: Bad Route header" in caplog.text
    assert msg.header("Route") == "<sip:10.0.0.9;lr"          # left as it came


async def test_loose_route_then_record_route_round_trip(tmp_path: Path) -> None:
    """The caller's in-dialog request, built from the Record-Route set our INVITE got, is routed back."""
    server = rr_script(tmp_path, "route { if (!loose_route()) record_route(); }")
    ctx = await run(server, request("INVITE", ruri="sip:bob@10.0.0.20"), source(UDP_SOCK))
    invite = relay(ctx, TCP_SOCK)
    route_set = invite.header_all("Record-Route")          # the caller uses it in order (RFC 3261 12.1.2)
    bye = request("BYE", ruri="sip:bob@10.0.0.20", to_tag="b1",
                  extra="".join(f"Route: {v}\r\n" for v in reversed(route_set)))
    ctx = await run(server, bye, source(UDP_SOCK))
    assert ctx.retcode == 1 and not bye.has_header("Route")
    assert ctx.send_socket == TCP_SOCK and ctx.send_hooks is None


async def test_double_preset_with_r2_is_removed_whole_by_loose_route(tmp_path: Path) -> None:
    server = rr_script(tmp_path, """route {
        if (loose_route()) { $var(rc) = 1; exit; }
        record_route_preset("127.0.0.1:5070;transport=tcp;r2=on", "127.0.0.1:5070;r2=on");
    }""")
    ctx = await run(server, request("INVITE", ruri="sip:bob@10.0.0.20"), source(UDP_SOCK))
    rr = relay(ctx, TCP_SOCK).header_all("Record-Route")
    assert rr == ["<sip:127.0.0.1:5070;transport=tcp;r2=on;ftag=a1;lr>",
                  "<sip:127.0.0.1:5070;r2=on;ftag=a1;lr>"]
    bye = request("BYE", ruri="sip:bob@10.0.0.20", to_tag="b1",
                  extra="".join(f"Route: {v}\r\n" for v in reversed(rr)))
    ctx = await run(server, bye, source(UDP_SOCK))
    assert ctx.vars["rc"] == 1 and not bye.has_header("Route") and ctx.send_socket == TCP_SOCK


async def test_record_route_with_a_bad_from_is_false(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    server = rr_script(tmp_path, 'route { if (!record_route()) $var(r) = "no"; }')
    raw = request().to_bytes().replace(b"From: <sip:alice@10.0.0.5>;tag=a1", b"From: <sip:alice@10.0.0.5")
    msg = parse_message(raw)
    assert isinstance(msg, SIPRequest)
    ctx = await run(server, msg)
    assert ctx.vars["r"] == "no" and ctx.send_hooks is None and "cannot record-route" in caplog.text
