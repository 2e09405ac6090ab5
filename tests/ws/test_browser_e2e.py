"""A real browser against examples/webrtc-presence.cfg: Debian's chromium, headless, driven by
Playwright (no browser download: executable_path=/usr/bin/chromium), loads examples/web/ (SIP.js from
the npm registry, pinned), registers over ws:// (and over wss://, a wss socket added to the example with
a test CA's certificate the browser is told to trust by its key: --ignore-certificate-errors-spki-list),
publishes its status and subscribes to a buddy; a Python UA over UDP then changes the buddy's presence
and the page shows it. A screenshot of the page is kept (its path printed; copied to test-artifacts/
when ROUTESCRIPT_ARTIFACTS is set). A second test calls a Python phone from SIP.js in the page (a fake
microphone) and the phone hangs up: the signalling through the proxy is checked (INVITE, 200, ACK, BYE),
no media flows.

Skips, saying why, only when chromium, node/npm or the playwright package are missing; .ci/run
installs them."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ws_e2e import ROOT, WebrtcServer, callee_dialog, free_port, webrtc_server

from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki

CHROMIUM = "/usr/bin/chromium"
SIPJS = "sip.js@0.21.2"          # examples/web/package.json pins the same version
WEB = ROOT / "examples" / "web"

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{entity}">
  <tuple id="desk"><status><basic>{basic}</basic></status></tuple>
  <dm:person id="p"><rpid:activities>{activity}</rpid:activities></dm:person>
</presence>"""


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH (apt-get install nodejs npm)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


def _skip_without_tools() -> None:
    """Skip, saying why, when chromium, node/npm or playwright is missing (.ci/run installs them)."""
    missing = _missing()
    if missing is not None:
        print(f"\nbrowser test skipped: {missing}")
        pytest.skip(missing)


def _sipjs(cache: Path) -> Path:
    """node_modules with SIP.js, installed once into the pytest cache."""
    modules = cache / "node_modules"
    if not (modules / "sip.js" / "lib" / "index.js").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(cache),
                        SIPJS], check=True, capture_output=True, timeout=300)
    return modules


class _PageFiles(SimpleHTTPRequestHandler):
    """examples/web/ at /, the npm modules at /node_modules/."""

    modules = Path()

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/node_modules/"):
            return str(self.modules / clean.removeprefix("/node_modules/"))
        return super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:   # quiet: pytest shows what fails
        pass


@contextmanager
def _serve(modules: Path) -> Iterator[int]:
    handler = type("Files", (_PageFiles,), {"modules": modules})
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(handler, directory=str(WEB)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def _site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, WebrtcServer]]:
    """examples/web/ served on a free port (its HTTP port) and the example script allowing that origin;
    the test skips, saying why, when a tool is missing."""
    _skip_without_tools()
    modules = _sipjs(request.config.cache.mkdir("npm-sipjs-0.21.2"))
    with _serve(modules) as http_port, \
            webrtc_server(tmp_path, origins=f"http://127.0.0.1:{http_port}") as srv:
        yield http_port, srv


def _keep(shot: Path) -> None:
    print(f"\nscreenshot of the presence page: {shot}")
    if os.environ.get("ROUTESCRIPT_ARTIFACTS"):
        target = ROOT / "test-artifacts"
        target.mkdir(exist_ok=True)
        shutil.copy(shot, target / shot.name)
        print(f"copied to {target / shot.name}")


def _wss_lines(pki: TestPki, port: int, origin: str) -> str:
    """A wss socket for the example (added after its lines: globals may come anywhere at the top level),
    with the test PKI's server certificate."""
    return (f'\nsocket = wss:127.0.0.1:{port}\nloadmodule "tls_mgm.so"\nloadmodule "proto_wss.so"\n'
            f'modparam("tls_mgm", "certificate", "{pki.server}")\n'
            f'modparam("tls_mgm", "private_key", "{pki.server}")\n'
            'modparam("tls_mgm", "verify_cert", "0")\n'      # a browser sends no client certificate
            f'modparam("proto_wss", "allowed_origins", "{origin}")\n'
            'modparam("proto_wss", "wss_tls_handshake_timeout", 2000)\n')


def _spki_pin(pem: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of the first certificate in `pem`: what Chromium's
    --ignore-certificate-errors-spki-list trusts (that one key, no system store touched)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_browser_registers_publishes_and_sees_a_buddy_change(tmp_path: Path,
                                                                     request: pytest.FixtureRequest,
                                                                     scheme: str) -> None:
    _skip_without_tools()
    from playwright.async_api import async_playwright, expect

    modules = _sipjs(request.config.cache.mkdir("npm-sipjs-0.21.2"))
    args = ["--no-sandbox"]
    extra, wss_port = "", free_port()
    with _serve(modules) as http_port:
        origin = f"http://127.0.0.1:{http_port}"
        if scheme == "wss":
            pki_dir = tmp_path / "pki"
            pki_dir.mkdir()
            pki = TestPki.make(pki_dir)
            extra = _wss_lines(pki, wss_port, origin)
            args.append(f"--ignore-certificate-errors-spki-list={_spki_pin(pki.server)}")
        with webrtc_server(tmp_path, origins=origin, extra=extra) as srv:
            port = wss_port if scheme == "wss" else srv.ws_port
            await _browse(srv, http_port, scheme, port, args, tmp_path, async_playwright, expect)
            assert f"{scheme}:127.0.0.1" in srv.server.log()


async def _browse(srv: Any, http_port: int, scheme: str, port: int, args: list[str], tmp_path: Path,
                  async_playwright: Any, expect: Any) -> None:
    """The page registers over scheme://127.0.0.1:port, publishes, subscribes to bob; bob changes."""
    url = (f"http://127.0.0.1:{http_port}/index.html?server={scheme}://127.0.0.1:{port}"
           f"&user=alice&domain=127.0.0.1&buddies=bob")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            await page.wait_for_function("window.presenceReady === true", timeout=20000)
            assert errors == []
            await expect(page.locator("#registration")).to_contain_text(f"registered over {scheme}://")
            await expect(page.locator("#buddy-bob .state")).to_have_text("offline")

            bob = await SipTestClient.start("udp", srv.udp, user="bob", timeout=5.0)
            try:
                bob.auto_reply["NOTIFY"] = 200
                # the page's PUBLISH reached the presence server: bob watching alice sees it
                watch = bob.subscribe("sip:alice@127.0.0.1", event="presence")
                assert (await bob.send_request(watch)).status in (200, 202)
                notify = await bob.expect_request("NOTIFY", call_id=watch.call_id)
                assert b"<basic>open</basic>" in notify.body

                online = PIDF.format(entity=bob.aor, basic="open", activity="<rpid:unknown/>")
                assert (await bob.send_request(bob.publish(bob.aor, online))).status == 200
                await expect(page.locator("#buddy-bob .state")).to_have_text("online", timeout=10000)

                busy = PIDF.format(entity=bob.aor, basic="open", activity="<rpid:on-the-phone/>")
                assert (await bob.send_request(bob.publish(bob.aor, busy))).status == 200
                await expect(page.locator("#buddy-bob .state")).to_have_text("on the phone",
                                                                             timeout=10000)
            finally:
                await bob.close()
            shot = tmp_path / f"presence-page-{scheme}.png"
            await page.screenshot(path=str(shot))
            _keep(shot)
            assert shot.stat().st_size > 0
        finally:
            await browser.close()


# A second user agent in the page, made with the page's SIP.js: the example page has no call button.
# SIP.js writes a made-up "xyz.invalid" host in its Contact and Via, as every browser client does.
CALL_FROM_PAGE = """async ({server, target}) => {
  const { UserAgent, Registerer, Inviter } = await import("./node_modules/sip.js/lib/index.js");
  const ua = new UserAgent({ uri: UserAgent.makeURI("sip:carol@127.0.0.1"), transportOptions: { server },
                             logLevel: "warn" });
  await ua.start();
  await new Registerer(ua, { expires: 600 }).register();
  window.callStates = [];
  const inviter = new Inviter(ua, UserAgent.makeURI(target), {
    sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } });
  inviter.stateChange.addListener((state) => window.callStates.push(state));
  inviter.invite().catch((error) => window.callStates.push(`error: ${error}`));
}"""


def _answer(offer: str) -> bytes:
    """An SDP answer the browser's setRemoteDescription takes: its offer with our own ICE credentials,
    setup:active and no candidates. Media never flows (no ICE candidate): only the signalling is
    checked."""
    ours = {"a=ice-ufrag:": "a=ice-ufrag:rsph", "a=ice-pwd:": "a=ice-pwd:routescriptphone0123456789",
            "a=setup:": "a=setup:active"}
    lines = []
    for line in offer.replace("\r\n", "\n").split("\n"):
        if not line or line.startswith(("a=candidate", "a=end-of-candidates", "a=ice-options")):
            continue
        attribute = line.split(":", 1)[0] + ":"
        lines.append(ours.get(attribute, line))
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_browser_calls_a_phone_and_the_phone_hangs_up(tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    """SIP.js in chromium (fake microphone) calls a Python phone over UDP through the proxy: INVITE,
    200, ACK, then the phone's BYE reaches the page at the address fix_nated_contact() wrote for its
    `xyz.invalid` Contact."""
    from playwright.async_api import async_playwright

    with _site(tmp_path, request) as (http_port, srv):
        server = f"ws://127.0.0.1:{srv.ws_port}"
        url = f"http://127.0.0.1:{http_port}/index.html?server={server}&user=alice&domain=127.0.0.1"
        bob = await SipTestClient.start("udp", srv.udp, user="bob", timeout=10.0)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
            try:
                reg = bob.request("REGISTER", bob.server_uri, to=bob.aor, headers=[("Expires", "600")])
                assert (await bob.send_request(reg)).status == 200
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for_function("window.presenceReady === true", timeout=20000)
                await page.evaluate(CALL_FROM_PAGE, {"server": server, "target": bob.aor})

                invite = await bob.expect_request("INVITE")
                page_contact = invite.contacts[0].uri   # SIP.js wrote xyz.invalid: fix_nated_contact()
                assert page_contact is not None
                assert (page_contact.host, page_contact.transport) == ("127.0.0.1", "ws")
                rr = [("Record-Route", value) for value in invite.header_all("Record-Route")]
                ok = await bob.reply(invite, 200, headers=[("Contact", f"<{bob.contact_uri}>"), *rr],
                                     body=_answer(invite.body.decode()), content_type="application/sdp")
                await bob.expect_request("ACK", call_id=invite.call_id)
                await page.wait_for_function("window.callStates.includes('Established')", timeout=10000)

                bye = bob.request("BYE", dialog=callee_dialog(invite, ok))
                bob.send(bye)
                assert (await bob.expect_response(bye, final=True)).status == 200
                await page.wait_for_function("window.callStates.includes('Terminated')", timeout=10000)
                states = await page.evaluate("window.callStates")
                assert not any(str(s).startswith("error") for s in states), states
            finally:
                await browser.close()
                await bob.close()
