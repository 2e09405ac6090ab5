#!/usr/bin/env python3
"""Pure-Python "ceiling" for the proxy benchmark: the least a Python process must do to carry the
proxy scenario's calls (sipp/proxy_uac.xml -> this -> sipp/proxy_uas.xml), so routescript's calls/s
can be read against what Python itself allows on the same machine in the same run.

Single process, stdlib asyncio, UDP, stateless and without parsing beyond header lines: a request
gets our Via on top (branch derived from the caller's), Max-Forwards decremented, a Record-Route when it
is an initial INVITE, our own Route removed, and goes to the next Route or else the request URI's
host:port; a reply loses its top Via and goes to the next Via's sent-by. OPTIONS is answered 200 (the
harness's readiness probe). No transactions, no retransmissions, no timers: the real proxy does all of
that, so the ratio routescript / ceiling is the price of being a real proxy in Python.

Usage: python3 benchmarks/py_proxy_ceiling.py [--host 127.0.0.1] [--port 5096]
"""
import argparse
import asyncio
import socket


def _hostport(uri, default=5060):
    """'sip:user@host:port;params' or '<sip:host:port;lr>' -> (host, port)."""
    uri = uri.strip().lstrip("<")
    uri = uri.split(":", 1)[1] if uri[:4] in ("sip:", "sips") else uri
    uri = uri.split("@", 1)[-1]
    for stop in ";>? ":
        uri = uri.split(stop, 1)[0]
    host, _, port = uri.partition(":")
    return host, int(port) if port else default


class Relay(asyncio.DatagramProtocol):
    def __init__(self, me):
        self.me = me                       # "127.0.0.1:5096"
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        if lines[0].startswith("SIP/"):
            self._reply(lines, sep, body)
        else:
            self._request(lines, sep, body, addr)

    def _reply(self, lines, sep, body):
        for i, line in enumerate(lines):
            if line[:4].lower() == "via:" or line[:2].lower() == "v:":
                name, _, value = line.partition(":")
                _first, comma, rest = value.partition(",")
                if comma:                   # "Via: ours, theirs" on one line (SIPp's [last_Via:])
                    lines[i] = f"{name}:{rest}"
                    nxt = rest
                else:
                    del lines[i]
                    nxt = next((ln.partition(":")[2] for ln in lines[i:]
                                if ln[:4].lower() == "via:" or ln[:2].lower() == "v:"), None)
                break
        else:
            return
        if nxt is None:
            return
        sent_by = nxt.strip().split(" ", 1)[1].split(";", 1)[0].split(",", 1)[0]
        host, _, port = sent_by.partition(":")
        self.transport.sendto("\r\n".join(lines).encode() + sep + body, (host, int(port or 5060)))

    def _request(self, lines, sep, body, addr):
        method, ruri, _ = lines[0].split(" ", 2)
        if method == "OPTIONS":
            copied = [ln for ln in lines[1:] if ln[:4].lower() in ("via:", "from", "to: ", "call", "cseq")]
            out = ["SIP/2.0 200 OK", *copied, "Content-Length: 0", "", ""]
            self.transport.sendto("\r\n".join(out).encode(), addr)
            return
        dest = None
        has_to_tag = False
        via_at = None
        for i, line in enumerate(lines):
            low = line[:13].lower()
            if low.startswith("route:"):
                if dest is None and self.me in line:
                    lines[i] = ""            # our own Route: removed (loose routing)
                elif dest is None:
                    dest = _hostport(line.partition(":")[2].split(",", 1)[0])
            elif low.startswith("via:") and via_at is None:
                via_at = i
            elif low.startswith("to:"):
                has_to_tag = "tag=" in line
            elif low.startswith("max-forwards:"):
                lines[i] = f"Max-Forwards: {int(line.partition(':')[2]) - 1}"
        if via_at is None:
            return
        if dest is None:
            dest = _hostport(ruri)
        branch = lines[via_at].rpartition("branch=")[2].split(";", 1)[0]
        if method == "ACK" and has_to_tag:
            branch += "a"                    # a 2xx ACK is a transaction of its own
        ours = [f"Via: SIP/2.0/UDP {self.me};branch=z9hG4bKc{hash(branch) & 0xFFFFFFFFFFFF:x}"]
        if method == "INVITE" and not has_to_tag:
            ours.append(f"Record-Route: <sip:{self.me};lr>")
        out = lines[:via_at] + ours + [ln for ln in lines[via_at:] if ln]
        self.transport.sendto("\r\n".join(out).encode() + sep + body, dest)


async def main(host, port):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.bind((host, port))
    transport, _proto = await loop.create_datagram_endpoint(lambda: Relay(f"{host}:{port}"), sock=sock)
    print(f"py_proxy_ceiling relaying on udp:{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5096)
    a = ap.parse_args()
    try:
        asyncio.run(main(a.host, a.port))
    except KeyboardInterrupt:
        pass
