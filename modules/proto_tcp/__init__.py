"""proto_tcp - TCP is built into routescript's transport layer; this package lets scripts
`loadmodule "proto_tcp.so"` and accepts its parameters (tcp_connection_lifetime is a core parameter)."""

from __future__ import annotations

from routescript.core.module import Module, Param


class ProtoTcpModule(Module):
    name = "proto_tcp"
    params = (
        Param("tcp_port", int, 5060, "accepted"),
        Param("tcp_send_timeout", int, 100, "accepted"),
        Param("tcp_max_msg_chunks", int, 32, "accepted"),
        Param("tcp_crlf_pingpong", int, 1, "accepted; CRLF keep-alives are always answered"),
        Param("tcp_crlf_drop", int, 0, "accepted"),
        Param("tcp_async", int, 1, "accepted; all I/O is asynchronous here"),
        Param("tcp_async_max_postponed_chunks", int, 32, "accepted"),
        Param("tcp_async_local_connect_timeout", int, 100, "accepted"),
        Param("tcp_async_local_write_timeout", int, 10, "accepted"),
        Param("trace_destination", str, "", "accepted; no tracing"),
        Param("trace_on", int, 0, "accepted; no tracing"),
        Param("trace_filter_route", str, "", "accepted; no tracing"),
    )


MODULE = ProtoTcpModule
