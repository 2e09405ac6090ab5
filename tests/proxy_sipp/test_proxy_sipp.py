"""examples/proxy.cfg end to end: the real server between a SIPp caller and SIPp callees on loopback,
over UDP and TCP, with one and with two worker processes (issue 19, "What must work, end to end").

Each test is one call: a full call with Record-Route honoured (ACK, re-INVITE and BYE along the route
set, BYE from either side), a busy callee and a callee that never answers (ringing, or silent) sent on
to the voicemail destination by the failure route (serial forking), both failing (the caller gets the
reply), a CANCEL after 180, MESSAGE relayed statefully with Max-Forwards decremented, OPTIONS forwarded
statelessly and OPTIONS to the proxy itself, Max-Forwards 0. Skipped, with the reason in
pytest's summary, when `sipp` is not on PATH; `.ci/run` installs it, so CI never skips these. SIPp runs
are bounded (proxy_harness.SIPP_TIMEOUT_S): the whole module stays around a minute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy_harness import (SIPP, Proxy, Sipp, SippResult, free_port, outcome, run_caller, start_callee,
                           start_proxy)

pytestmark = pytest.mark.skipif(
    SIPP is None,
    reason="sipp is not installed (Debian/Ubuntu: apt-get install sip-tester); .ci/run installs it")

FR_TIMEOUT = 2        # the test config's fr_timeout (no reply at all) ...
FR_INV_TIMEOUT = 3    # ... and fr_inv_timeout (rang, never answered), seconds


@pytest.fixture(scope="module", params=[("udp", 1), ("udp", 2), ("tcp", 1), ("tcp", 2)],
                ids=["udp-1worker", "udp-2workers", "tcp-1worker", "tcp-2workers"])
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proto, workers = request.param
    workdir = tmp_path_factory.mktemp(f"proxy-{proto}-{workers}")
    running = start_proxy(workdir, proto, workers, fr_timeout=FR_TIMEOUT, fr_inv_timeout=FR_INV_TIMEOUT)
    try:
        yield running
    finally:
        running.server.stop()
    # every call of the module, whatever it did, left no traceback in the server's log
    log = running.server.log()
    assert "Traceback" not in log, log[-5000:]


class Callees:
    """The SIPp processes of one test, their files in the test's tmp_path; callees killed at teardown
    whatever happened."""

    def __init__(self, proxy: Proxy, workdir: Path) -> None:
        self.proxy, self.workdir = proxy, workdir
        self.started: list[Sipp] = []

    def start(self, scenario: str, port: int | None = None, *extra: str,
              name: str | None = None) -> tuple[Sipp, int]:
        port = port or free_port()
        sipp = start_callee(scenario, port, self.proxy.proto, self.workdir, *extra, name=name)
        self.started.append(sipp)
        return sipp, port

    def voicemail(self, scenario: str) -> Sipp:
        return self.start(scenario, self.proxy.voicemail_port, name="voicemail")[0]

    def call(self, scenario: str, callee_port: int, *extra: str) -> SippResult:
        return run_caller(scenario, self.proxy, callee_port, self.workdir, *extra)


@pytest.fixture
def sipp(proxy: Proxy, tmp_path: Path) -> Iterator[Callees]:
    c = Callees(proxy, tmp_path)
    yield c
    for process in c.started:
        process.kill()


def test_call_with_record_route(proxy: Proxy, sipp: Callees) -> None:
    """INVITE/100/180/200/ACK/BYE/200: the 200 carries our Record-Route, ACK and BYE come back through
    us with our Route removed (both scenarios check it), and the reply route logged the replies."""
    uas, port = sipp.start("uas_answer.xml")
    uac = sipp.call("uac_call.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]
    proxy.server.wait_for("reply 180 Ringing for INVITE", timeout=2)
    proxy.server.wait_for("reply 200 OK for INVITE", timeout=2)


def test_callee_hangs_up(proxy: Proxy, sipp: Callees) -> None:
    """The callee's BYE follows the route set the other way: to the proxy, loose-routed to the caller."""
    uas, port = sipp.start("uas_answer_bye.xml")
    uac = sipp.call("uac_call_callee_bye.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_busy_callee_goes_to_voicemail(proxy: Proxy, sipp: Callees) -> None:
    """486 from the callee: the proxy ACKs it (hop by hop), failure_route relays to voicemail, whose 200
    reaches the caller - who never sees the 486."""
    busy, port = sipp.start("uas_busy.xml")
    vm = sipp.voicemail("uas_answer.xml")
    uac = sipp.call("uac_call.xml", port)
    ok, text = outcome(uac, busy.wait(), vm.wait())
    assert ok, text + proxy.server.log()[-3000:]
    proxy.server.wait_for("486 from sip:bob@", timeout=2)


def test_busy_everywhere_caller_gets_486(proxy: Proxy, sipp: Callees) -> None:
    """Voicemail busy too: the failure route is not armed again, so the caller gets the 486."""
    busy, port = sipp.start("uas_busy.xml")
    vm = sipp.voicemail("uas_busy.xml")
    uac = sipp.call("uac_busy.xml", port)
    ok, text = outcome(uac, busy.wait(), vm.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_ringing_callee_never_answers_goes_to_voicemail(proxy: Proxy, sipp: Callees) -> None:
    """180 then nothing: after fr_inv_timeout the proxy CANCELs the branch (the callee answers 200 and
    487, ACKed by the proxy), the failure route sees 408 and relays to voicemail, which answers."""
    ringing, port = sipp.start("uas_cancelled.xml")
    vm = sipp.voicemail("uas_answer.xml")
    uac = sipp.call("uac_call.xml", port)
    ok, text = outcome(uac, ringing.wait(), vm.wait())
    assert ok, text + proxy.server.log()[-3000:]
    proxy.server.wait_for("408 from sip:bob@", timeout=2)


def test_silent_callee_times_out_to_voicemail(proxy: Proxy, sipp: Callees) -> None:
    """No reply at all: fr_timeout ends the branch without a CANCEL (nothing was provisional), the
    failure route sees the proxy's own 408 and relays to voicemail."""
    silent, port = sipp.start("uas_no_answer.xml", None, "-d", str((FR_TIMEOUT + 1) * 1000))
    vm = sipp.voicemail("uas_answer.xml")
    uac = sipp.call("uac_call.xml", port)
    ok, text = outcome(uac, silent.wait(), vm.wait())
    assert ok, text + proxy.server.log()[-3000:]
    proxy.server.wait_for("408 from sip:bob@", timeout=2)


def test_nobody_answers_caller_gets_408(proxy: Proxy, sipp: Callees) -> None:
    """Callee and voicemail both silent: after the second fr_timeout the caller gets the proxy's 408."""
    pause = str((FR_TIMEOUT + 1) * 1000)
    silent, port = sipp.start("uas_no_answer.xml", None, "-d", pause)
    vm = sipp.start("uas_no_answer.xml", proxy.voicemail_port, "-d", pause, name="voicemail")[0]
    uac = sipp.call("uac_no_answer.xml", port)
    ok, text = outcome(uac, silent.wait(), vm.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_caller_cancels_ringing_call(proxy: Proxy, sipp: Callees) -> None:
    """CANCEL after 180: 200 to the CANCEL, the callee gets a CANCEL with the INVITE's branch (checked
    by the scenario) and answers 487, which reaches the caller; its ACK is absorbed by the proxy."""
    uas, port = sipp.start("uas_cancelled.xml")
    uac = sipp.call("uac_cancel.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_message_relayed(proxy: Proxy, sipp: Callees) -> None:
    """MESSAGE relayed statefully without Record-Route, Max-Forwards 70 -> 69, body intact."""
    uas, port = sipp.start("uas_message.xml")
    uac = sipp.call("uac_message.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_options_for_another_host_forwarded_statelessly(proxy: Proxy, sipp: Callees) -> None:
    """forward(): the OPTIONS reaches the callee (Max-Forwards 69) and the callee's 200 the caller."""
    uas, port = sipp.start("uas_options.xml")
    uac = sipp.call("uac_options_relayed.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]


def test_options_to_the_proxy(proxy: Proxy, sipp: Callees) -> None:
    uac = sipp.call("uac_options.xml", free_port())
    assert uac.ok, uac.output + proxy.server.log()[-3000:]


def test_max_forwards_zero_gets_483(proxy: Proxy, sipp: Callees) -> None:
    """Nothing listens on the callee port: a proxy that relayed instead of answering 483 fails here."""
    uac = sipp.call("uac_maxfwd.xml", free_port())
    assert uac.ok, uac.output + proxy.server.log()[-3000:]


def test_reinvite_in_the_dialog(proxy: Proxy, sipp: Callees) -> None:
    """A re-INVITE follows the route set like the BYE: loose-routed, not record-routed again, its 200
    and ACK through the proxy (the route's t_on_failure is only armed for initial INVITEs)."""
    uas, port = sipp.start("uas_answer_reinvite.xml")
    uac = sipp.call("uac_call_reinvite.xml", port)
    ok, text = outcome(uac, uas.wait())
    assert ok, text + proxy.server.log()[-3000:]
