"""SIP layer throughput, by hand (not collected by pytest):

    .venv/bin/python benchmarks/bench_sip.py [seconds]

For a typical ~700-byte SUBSCRIBE: parse it, read Via/From/To/Call-ID/CSeq/Event (what the core and
the presence module touch for every request), build the 200 reply and serialise it. Every message
has its own Call-ID, tags and branch so no cache is flattered. Prints messages per second on one core.
"""

from __future__ import annotations

import sys
import time

from routescript.sip import build_reply, parse_message

TEMPLATE = (
    "SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n:08x}a7f3;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Bob Watcher" <sip:bob@example.com>;tag={n:x}1928301774\r\n'
    "To: <sip:alice@example.com>\r\n"
    "Call-ID: a84b4c76e66710{n:08x}@pc33.example.com\r\n"
    "CSeq: 314159 SUBSCRIBE\r\n"
    "Contact: <sip:bob@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000>\"\r\n"
    "Event: presence\r\n"
    "Accept: application/pidf+xml, application/rlmi+xml, multipart/related\r\n"
    "Allow-Events: presence, presence.winfo, dialog, message-summary\r\n"
    "Supported: eventlist, replaces, timer\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    "User-Agent: ExamplePhone/5.2.1 (Linux; build 20240101)\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def one(data: bytes) -> bytes:
    msg = parse_message(data)
    msg.via.branch  # noqa: B018
    msg.from_.tag  # noqa: B018
    msg.to.tag  # noqa: B018
    msg.call_id  # noqa: B018
    msg.cseq  # noqa: B018
    msg.event  # noqa: B018
    return build_reply(msg, 200, headers=(("Expires", "3600"),)).to_bytes()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    samples = [TEMPLATE.format(n=n).encode() for n in range(20000)]
    print(f"message size: {len(samples[0])} bytes")
    for data in samples[:1000]:  # warm up
        one(data)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for data in samples:
            one(data)
        count += len(samples)
    elapsed = time.perf_counter() - start
    print(f"{count / elapsed:,.0f} messages/s (parse + Via/From/To/Call-ID/CSeq/Event + 200 reply), "
          f"{elapsed / count * 1e6:.1f} us each")


if __name__ == "__main__":
    main()
