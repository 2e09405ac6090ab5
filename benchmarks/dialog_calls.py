"""What a call through the proxy costs with dialogs, dialog-info publication and accounting on, against the
plain relay - in-process, by hand (not collected by pytest):

    .venv/bin/python -m benchmarks.dialog_calls [--calls N] [--count] [--only relay,dialog,...]

The relay scenario of bench_inprocess (examples/proxy.cfg, a fake caller and callee on the server's UDP
endpoint, INVITE/100/180/200/ACK/BYE/200 along the Record-Route, 40 calls at a time) on variants of the
proxy's script, each adding one feature to the initial INVITE in route[relay]:

  relay       examples/proxy.cfg as it is
  dialog      + create_dialog()                                    (dialog, db_mode 0)
  dialoginfo  + create_dialog(); dialoginfo_set()                  (pua_dialoginfo -> pua -> our presence,
                                                                    in process; SQLite presentity rows)
  acc         + do_accounting("log|db", "cdr|missed")              (acc: CDR row in SQLite at the BYE; the
                                                                    ACC: line below log_level, not printed)
  all         + create_dialog(); dialoginfo_set(); do_accounting(...)

`--count` prints Python function calls per call (cProfile; the same on every run: compare these on a
shared machine) and the difference to `relay`; without it, event-loop CPU microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_inprocess import ProxyPeers, call_request, measure, relay_call, serving
from benchmarks.servers import EXAMPLES
from routescript.core.server import install_event_loop_policy

_PRESENCE = "".join(f'loadmodule "{m}.so"\n' for m in ("db_sqlite", "presence", "presence_xml",
                                                        "presence_dialoginfo", "pua", "pua_dialoginfo"))
_MODULES = {   # feature -> (its loadmodule lines, its modparam lines)
    "dialog": ('loadmodule "dialog.so"\n', ""),
    "dialoginfo": (_PRESENCE, 'modparam("presence", "db_url", "sqlite:///tmp/bench.sqlite")\n'),
    "acc": ('loadmodule "acc.so"\n', 'modparam("acc", "db_url", "sqlite:///tmp/bench.sqlite")\n'),
}
_CALLS = {   # what route[relay] does for an initial INVITE
    "dialog": "create_dialog();",
    "dialoginfo": "dialoginfo_set();",
    "acc": 'do_accounting("log|db", "cdr|missed");',
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "relay": (), "dialog": ("dialog",), "dialoginfo": ("dialog", "dialoginfo"), "acc": ("dialog", "acc"),
    "all": ("dialog", "dialoginfo", "acc"),
}
RUN_TIMEOUT = 600.0   # seconds a variant's calls may take, even under cProfile
ANCHOR = 'route[relay] {\n    if (is_method("INVITE")) {\n'


def variant_script(features: tuple[str, ...]) -> str:
    """examples/proxy.cfg with the features' modules loaded and their calls on the initial INVITE."""
    text = (EXAMPLES / "proxy.cfg").read_text()
    if not features:
        return text
    if ANCHOR not in text:
        raise RuntimeError("examples/proxy.cfg changed: route[relay] does not start as expected")
    loads = "".join(_MODULES[f][0] for f in features)
    params = "".join(_MODULES[f][1] for f in features)
    calls = " ".join(_CALLS[f] for f in features)
    text = text.replace('loadmodule "sipmsgops.so"', loads + 'loadmodule "sipmsgops.so"', 1)
    text = text.replace("\nroute {", "\n" + params + "\nroute {", 1)
    return text.replace(ANCHOR, ANCHOR + f"        if (!has_totag()) {{ {calls} }}\n", 1)


def user_request(method: str, n: int, cseq: int, **kw: object) -> bytes:
    """bench_inprocess's caller request with users of call n's own (caller<n> calls bob<n>): the dialog-info
    publications go to presentities of their own, as many phones' calls would, not all to one."""
    data = call_request(method, n, cseq, **kw)  # type: ignore[arg-type]
    data = data.replace(b"sip:bob@", f"sip:bob{n}@".encode())
    return data.replace(b"sip:caller@", f"sip:caller{n}@".encode())


async def user_call(p: ProxyPeers, n: int) -> None:
    """bench_inprocess.relay_call between call n's own users."""
    await relay_call(p, n, user_request)


async def run(name: str, calls: int, count: bool) -> float:
    """Python calls (count) or event-loop CPU seconds per call of one variant, on a fresh server."""
    prof = cProfile.Profile() if count else None
    with tempfile.TemporaryDirectory(prefix="bench-dialog-") as tmp:
        source = Path(tmp) / "variant.cfg"
        source.write_text(variant_script(VARIANTS[name]))
        async with serving(str(source), Path(tmp)) as server:
            try:   # a call waiting for a message that never comes would leave an idle loop forever
                spent = await asyncio.wait_for(measure(ProxyPeers(server), calls, user_call, prof),
                                               RUN_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(f"{name}: the calls did not end within {RUN_TIMEOUT:.0f} s") from None
    if prof is not None:
        return sum(entry.callcount for entry in prof.getstats()) / calls
    return spent / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="calls to measure per variant")
    parser.add_argument("--count", action="store_true", help="Python function calls instead of CPU time")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated")
    args = parser.parse_args(argv)
    install_event_loop_policy()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: {', '.join(VARIANTS)}")
    base: float | None = None
    for name in names:
        value = asyncio.run(run(name, args.calls, args.count))
        if name == "relay":
            base = value
        extra = ""
        if base is not None and name != "relay":
            extra = f"  (+{value - base:,.0f} over relay)" if args.count \
                else f"  (+{(value - base) * 1e6:.1f} us over relay)"
        shown = f"{value:8,.0f} Python calls per call" if args.count else f"{value * 1e6:8.1f} us per call"
        print(f"{name:10} {shown}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
