"""proto_udp - UDP is built into routescript's transport layer; this package lets scripts
`loadmodule "proto_udp.so"` and takes its parameters (docs/modules/proto_udp.md).

What a value other than the default would ask for and we do not do is refused at load: a default port
for socket= lines (ours is always 5060: write the port in the socket line) and HEP tracing."""

from __future__ import annotations

from routescript.core.module import Module, Param

NO_TRACING = "SIP tracing (proto_hep/tracer) is not built"


class ProtoUdpModule(Module):
    name = "proto_udp"
    params = (
        Param("udp_port", int, 5060, "", later="a socket= line without a port listens on 5060; write the "
                                              "port in the line (socket=udp:IP:PORT)"),
        Param("trace_destination", str, "", "", later=NO_TRACING),
        Param("trace_on", int, 0, "", later=NO_TRACING),
    )


MODULE = ProtoUdpModule
