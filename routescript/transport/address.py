"""The address value objects (SocketInfo, Source, Destination) are the SIP layer's
(routescript.sip.address): transport re-exports them under their old home."""

from routescript.sip.address import (DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT, PROTOCOLS, STREAM_PROTOCOLS, TCP,
                                     TLS, UDP, WS, WS_PROTOCOLS, WSS, Destination, SocketInfo, Source,
                                     bare_host, host_for_uri, is_ip, is_ipv6, normalize_host)

__all__ = ["DEFAULT_SIP_PORT", "DEFAULT_SIPS_PORT", "PROTOCOLS", "STREAM_PROTOCOLS", "TCP", "TLS", "UDP",
           "WS", "WSS", "WS_PROTOCOLS", "Destination", "SocketInfo", "Source", "bare_host", "host_for_uri",
           "is_ip", "is_ipv6", "normalize_host"]
