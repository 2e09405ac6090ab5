"""The digest core (modules/auth/digest.py, nonce.py): RFC test vectors, the credentials parser (with a
hypothesis property: any text parses or raises DigestParseError), challenges and nonces."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.modules.auth.digest import (
    ALGORITHMS,
    MD5,
    QOP_AUTH,
    QOP_AUTH_INT,
    DigestParseError,
    calc_ha1,
    calc_response,
    challenge_values,
    parse_algorithms,
    parse_credentials,
    parse_qop,
    session_ha1,
)
from routescript.modules.auth.nonce import NonceIndex, NonceMint, NonceState


def test_rfc2617_example() -> None:
    """RFC 2617 3.5: Mufasa / "Circle Of Life", qop=auth."""
    ha1 = calc_ha1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    resp = calc_response(MD5, ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET",
                         uri="/dir/index.html", qop="auth", nc="00000001", cnonce="0a4f113b")
    assert resp == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(("alg", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(alg: str, expected: str) -> None:
    """RFC 7616 3.9.1: the same request answered with MD5 and with SHA-256."""
    a = ALGORITHMS[alg]
    ha1 = calc_ha1(a, "Mufasa", "http-auth@example.org", "Circle of Life")
    resp = calc_response(a, ha1, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", method="GET",
                         uri="/dir/index.html", qop="auth", nc="00000001",
                         cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert resp == expected


def test_sha512_256_and_sess_follow_rfc7616_formulas() -> None:
    """RFC 8760 SHA-512/256 (hashlib's sha512_256, as opensips-cli computes ha1_sha512t256) and the
    -sess HA1 = H(H(user:realm:pass):nonce:cnonce), computed here independently."""
    a = ALGORITHMS["SHA-512-256-SESS"]
    h = lambda t: hashlib.new("sha512_256", t.encode()).hexdigest()  # noqa: E731
    ha1 = calc_ha1(a, "bob", "example.com", "pw")
    assert ha1 == h("bob:example.com:pw") and len(ha1) == 64
    sess = session_ha1(a, ha1, "N", "C")
    assert sess == h(f"{ha1}:N:C")
    resp = calc_response(a, sess, nonce="N", method="REGISTER", uri="sip:example.com", qop="auth-int",
                         nc="00000002", cnonce="C", body=b"x")
    assert resp == h(f"{sess}:N:00000002:C:auth-int:{h('REGISTER:sip:example.com:' + h('x'))}")
    # no qop: RFC 2069 compatibility
    assert calc_response(MD5, "a" * 32, nonce="N", method="M", uri="U") == hashlib.md5(
        f"{'a' * 32}:N:{hashlib.md5(b'M:U').hexdigest()}".encode()).hexdigest()


GOOD = ('Digest username="alice", realm="example.com", nonce="abc", uri="sip:example.com", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="x y", qop=auth, nc=00000001, '
        'opaque="o"')


def test_parse_credentials() -> None:
    c = parse_credentials(GOOD)
    assert c is not None
    assert (c.username, c.realm, c.nonce, c.uri, c.qop, c.nc, c.cnonce, c.opaque, c.algorithm) == (
        "alice", "example.com", "abc", "sip:example.com", "auth", "00000001", "x y", "o", "MD5")
    assert c.user == "alice" and c.domain == ""
    # quoted qop/nc (seen in the field), escaped quotes, user@domain
    c2 = parse_credentials('digest  username = "bo\\"b@d.com" ,realm="r",nonce="n",uri="u",'
                           'response="' + "A" * 64 + '",qop="auth",nc="0000000a",cnonce="c"')
    assert c2 is not None and c2.username == 'bo"b@d.com' and c2.user == 'bo"b' and c2.domain == "d.com"
    assert c2.response == "a" * 64
    assert parse_credentials('Basic dXNlcjpwYXNz') is None


@pytest.mark.parametrize("value", [
    "", "Digest", "Digest ", 'Digest username="a"',                           # missing parameters
    GOOD.replace('username="alice"', 'username="alice", username="x"'),    # twice
    GOOD.replace('"abc"', '"abc'),                                         # unterminated quote
    GOOD + ",",                                                            # trailing comma
    GOOD.replace("nc=00000001", "nc=1"),                                   # nc is 8LHEX
    GOOD.replace(", nc=00000001", ""),                                     # qop without nc
    GOOD.replace("qop=auth", "qop=bogus"),
    GOOD.replace("6629fae49393a05397450978507c4ef1", "zz"),                # response not hex
    GOOD.replace('"abc"', '"a\x01c"'),                                     # control character
    GOOD + ', userhash=true',
    'Digest username="a" realm="b"',                                       # no comma
    GOOD + ', x=' + "y" * 5000,                                            # over the bound
])
def test_malformed_credentials(value: str) -> None:
    with pytest.raises(DigestParseError):
        parse_credentials(value)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parser_raises_only_its_own_error(text: str) -> None:
    try:
        parse_credentials(text)
    except DigestParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(['username="a"', 'realm="r"', 'nonce="n"', 'uri="u"', 'qop=auth',
                                 'response="' + "0" * 32 + '"', "nc=00000001", 'cnonce="c"', "x=y",
                                 '"', "=", ",", " ", "\\", 'opaque=""']), max_size=12))
def test_parser_on_near_valid_input(parts: list[str]) -> None:
    try:
        parse_credentials("Digest " + ", ".join(parts))
    except DigestParseError:
        pass


def test_algorithms_and_qop_arguments() -> None:
    assert [a.name for a in parse_algorithms("md5, SHA-256,sha-512-256-sess")] == [
        "SHA-512-256-sess", "SHA-256", "MD5"]
    assert parse_algorithms("") == (MD5,) and parse_algorithms(None) == (MD5,)
    with pytest.raises(ValueError, match="unknown digest algorithm"):
        parse_algorithms("SHA-1")
    assert parse_qop("auth,auth-int") == QOP_AUTH | QOP_AUTH_INT
    assert parse_qop("") == 0
    with pytest.raises(ValueError):
        parse_qop("1")   # OpenSIPS before 3.0 took 0/1


def test_challenge_values_one_per_algorithm_strongest_first() -> None:
    values = challenge_values("ex.com", "N", "O", QOP_AUTH, parse_algorithms("MD5,SHA-256"), stale=True)
    assert values == [
        'Digest realm="ex.com", nonce="N", opaque="O", stale=true, qop="auth", algorithm=SHA-256',
        'Digest realm="ex.com", nonce="N", opaque="O", stale=true, qop="auth", algorithm=MD5']


def test_nonce_signed_expiring_and_shared_by_the_secret() -> None:
    mint = NonceMint.from_phrase("s3cret", 30)
    nonce = mint.make(1000.0, 7, 0x41)
    info = mint.check(nonce, 1010.0)
    assert (info.state, info.index, info.offered) == (NonceState.VALID, 7, 0x41)
    assert mint.check(nonce, 1031.0).state is NonceState.EXPIRED
    # another server with the same phrase verifies it; one with another secret does not
    assert NonceMint.from_phrase("s3cret", 30).check(nonce, 1010.0).state is NonceState.VALID
    assert NonceMint.from_phrase("other", 30).check(nonce, 1010.0).state is NonceState.FORGED
    assert NonceMint.from_phrase(None, 30).check(nonce, 1010.0).state is NonceState.FORGED
    tampered = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    assert mint.check(tampered, 1010.0).state is NonceState.FORGED
    for junk in ("", "!!!", "x" * 500, "é" * 10):
        assert mint.check(junk, 1010.0).state is NonceState.FORGED


@pytest.mark.parametrize("shared", [False, True])
def test_nonce_index_single_use_and_bounded(shared: bool) -> None:
    index = NonceIndex.shared(size=8) if shared else NonceIndex.local(size=8)
    first = index.allocate()
    assert index.use(first) and not index.use(first)      # a replay
    assert not index.use(0) and not index.use(999)        # never issued
    old = index.allocate()
    for _ in range(8):
        index.allocate()                                   # `size` newer challenges overwrite its slot
    assert not index.use(old)


def test_shared_nonce_index_is_seen_by_a_forked_process() -> None:
    import os

    index = NonceIndex.shared(size=16)
    n = index.allocate()
    pid = os.fork()
    if pid == 0:   # the child (another worker) uses the nonce
        os._exit(0 if index.use(n) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not index.use(n)                                # the parent sees it used
    assert index.allocate() == n + 1                       # one counter for both
