"""proto_tcp - TCP is built into routescript's transport layer; this package lets scripts
`loadmodule "proto_tcp.so"` and takes its parameters (docs/modules/proto_tcp.md; the TCP bounds are core
parameters: tcp_connection_lifetime, tcp_max_connections, tcp_max_msg_time, ...).

The tuning knobs of OpenSIPS's own TCP engine (send timeouts, chunk counts, async write queues) are
accepted: asyncio does that work here, under the core's bounds. What a value other than the default would
change on the wire and we do not do is refused at load: a default port, CRLF keep-alives left unanswered
or dropped (we always answer them, RFC 5626 3.5.1), HEP tracing."""

from __future__ import annotations

from routescript.core.module import Module, Param
from routescript.modules.proto_udp import NO_TRACING


class ProtoTcpModule(Module):
    name = "proto_tcp"
    params = (
        Param("tcp_port", int, 5060, "", later="a socket= line without a port listens on 5060; write the "
                                              "port in the line (socket=tcp:IP:PORT)"),
        Param("tcp_send_timeout", int, 100, "accepted: writes are asyncio's, bounded by the core's limits"),
        Param("tcp_max_msg_chunks", int, 32, "accepted: a message must arrive whole within tcp_max_msg_time"),
        Param("tcp_crlf_pingpong", int, 1, "", later="a CRLF keep-alive is always answered (RFC 5626 3.5.1)"),
        Param("tcp_crlf_drop", int, 0, "", later="a CRLF keep-alive is always answered (RFC 5626 3.5.1)"),
        Param("tcp_async", int, 1, "accepted: all I/O is asynchronous here"),
        Param("tcp_async_max_postponed_chunks", int, 32, "accepted: asyncio queues the writes"),
        Param("tcp_async_local_connect_timeout", int, 100, "accepted: see the core's tcp_connect_timeout"),
        Param("tcp_async_local_write_timeout", int, 10, "accepted: asyncio queues the writes"),
        Param("trace_destination", str, "", "", later=NO_TRACING),
        Param("trace_on", int, 0, "", later=NO_TRACING),
        Param("trace_filter_route", str, "", "", later=NO_TRACING),
    )


MODULE = ProtoTcpModule
