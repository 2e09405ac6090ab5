"""Time a SIP server's answers from a process of its own: `python options_prober.py HOST PORT SECONDS`.

Sends an OPTIONS, waits for its answer, sleeps 2 ms, again, for SECONDS; prints "ready" first, then one JSON
line: the count, the longest, 99th-percentile and median waits and the five longest, in milliseconds. A
blocked event loop shows as one long wait (each OPTIONS waits until the loop reads it). Not a test module."""

from __future__ import annotations

import json
import socket
import sys
import time


def main(host: str, port: int, seconds: float) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    local = sock.getsockname()[1]
    waits: list[float] = []
    print("ready", flush=True)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        call_id = f"probe-{n}-{local}"
        request = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKprobe{n}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:{host}:{port}>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        sent = time.monotonic()
        sock.sendto(request, (host, port))
        try:
            while call_id.encode() not in sock.recv(65535):
                pass
            waits.append(time.monotonic() - sent)
        except TimeoutError:
            waits.append(2.0)
        time.sleep(0.002)
    waits.sort()
    ms = [w * 1000 for w in waits] or [0.0]
    return {"count": len(waits), "max": round(ms[-1], 1), "p99": round(ms[int(len(ms) * 0.99)], 1),
            "p50": round(ms[len(ms) // 2], 1), "longest": [round(w, 1) for w in ms[-5:]]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))), flush=True)
