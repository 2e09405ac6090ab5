"""routescript.transport - the server's sockets: UDP and TCP listeners, one send path.

The contract (docs/internals.md): TransportLayer(on_message, ...), `await listen(proto, host, port)`,
`send(data, dest)`, `await deliver(data, dest)`, `send_reply(response, source)`,
`destination_for(uri, socket)`, `await close()`. Requests reach on_message with received/rport stamped.
"""

from routescript.transport.address import (
    DEFAULT_SIP_PORT,
    TCP,
    TLS,
    UDP,
    Destination,
    SocketInfo,
    Source,
    bare_host,
    host_for_uri,
    normalize_host,
)
from routescript.transport.errors import FramingError, TransportError
from routescript.transport.framing import PING, PONG, Ping, StreamFramer
from routescript.transport.layer import TransportLayer
from routescript.transport.routing import response_destination, stamp_via

__all__ = [
    "DEFAULT_SIP_PORT",
    "PING",
    "PONG",
    "TCP",
    "TLS",
    "UDP",
    "Destination",
    "FramingError",
    "Ping",
    "SocketInfo",
    "Source",
    "StreamFramer",
    "TransportError",
    "TransportLayer",
    "bare_host",
    "host_for_uri",
    "normalize_host",
    "response_destination",
    "stamp_via",
]
