"""proto_udp - UDP is built into routescript's transport layer; this package lets scripts
`loadmodule "proto_udp.so"` and accepts its parameters."""

from __future__ import annotations

from routescript.core.module import Module, Param


class ProtoUdpModule(Module):
    name = "proto_udp"
    params = (
        Param("udp_port", int, 5060, "default port of socket= lines without one (accepted)"),
        Param("trace_destination", str, "", "accepted; no tracing"),
        Param("trace_on", int, 0, "accepted; no tracing"),
    )


MODULE = ProtoUdpModule
