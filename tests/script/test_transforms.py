"""Core transformations: OpenSIPS 3.x semantics, normal and edge inputs."""

from __future__ import annotations

import hashlib

import pytest

from routescript.script.registry import Registry, TransformSpec
from routescript.script.transforms import MAX_RESULT_LEN, SubstExpr, core_transforms

SPECS: dict[str, TransformSpec] = {s.name: s for s in core_transforms()}


def tr(name: str, value, *params):
    """Apply a transformation the way the compiler does: fixup the literal params once, then call."""
    spec = SPECS[name]
    assert spec.min_params <= len(params) <= spec.max_params, (name, params)
    if spec.fixup is not None:
        params = spec.fixup(tuple(params))
    return spec.fn(value, *params)


def test_registry_accepts_every_spec():
    reg = Registry()
    for spec in core_transforms():
        reg.add_transform(spec)
    assert len(reg.transforms) == len(SPECS)
    for name in ("s.len", "s.substr", "uri.user", "param.value", "nameaddr.uri", "re.subst", "csv.value",
                 "ip.pton", "s.select", "s.fill.left", "uri.scheme", "uri.schema"):
        assert name in reg.transforms
    assert all(s.min_params <= s.max_params for s in SPECS.values())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_null_passes_through_every_transformation(name):
    spec = SPECS[name]
    params = {
        "s.substr": (0, 1), "s.select": (0, ","), "s.index": ("a",), "s.rindex": ("a",),
        "s.fill.left": ("0", 3), "s.fill.right": ("0", 3), "s.width": (3,), "s.strip": (1,),
        "s.striptail": (1,), "s.stripto": ("a",), "uri.param": ("lr",), "param.value": ("a",),
        "param.valueat": (0,), "param.name": (0,), "param.exist": ("a",), "nameaddr.param": ("tag",),
        "csv.value": (0,), "re.subst": ("/a/b/",), "ip.matches": ("10.0.0.0/8",),
    }.get(name, ("k",) * spec.min_params)
    assert tr(name, None, *params) is None


# --- s. -----------------------------------------------------------------------------------------------

def test_s_len_and_int():
    assert tr("s.len", "alice") == 5
    assert tr("s.len", "") == 0
    assert tr("s.len", 12345) == 5
    assert tr("s.len", -7) == 2
    assert tr("s.int", "42") == 42
    assert tr("s.int", "-17abc") == -17
    assert tr("s.int", "abc") == 0  # OpenSIPS 3.x: no number -> 0, not an error
    assert tr("s.int", "") == 0
    assert tr("s.int", 9) == 9


@pytest.mark.parametrize("value,offset,length,expected", [
    ("abcdef", 0, 0, "abcdef"),
    ("abcdef", 1, 2, "bc"),
    ("abcdef", 2, 100, "cdef"),       # cut at the end
    ("abcdef", -2, 0, "ef"),          # negative offset from the end
    ("abcdef", -6, 1, "a"),
    ("abcdef", 1, -1, "bcde"),        # negative length stops before the end
    ("abcdef", 4, -3, ""),            # nothing left
    (12345, 1, 3, "234"),             # int values use their string form
])
def test_s_substr(value, offset, length, expected):
    assert tr("s.substr", value, offset, length) == expected


@pytest.mark.parametrize("value,offset", [("abc", 3), ("abc", 10), ("abc", -4), ("", 0)])
def test_s_substr_out_of_range_is_error(value, offset):
    with pytest.raises(ValueError):
        tr("s.substr", value, offset, 1)


def test_s_substr_fixup_converts_and_refuses():
    assert SPECS["s.substr"].fixup(("1", "-2")) == (1, -2)
    with pytest.raises(ValueError):
        SPECS["s.substr"].fixup(("one", "2"))


@pytest.mark.parametrize("value,index,sep,expected", [
    ("a,b,c", 0, ",", "a"),
    ("a,b,c", 2, ",", "c"),
    ("a,b,c", -1, ",", "c"),
    ("a,b,c", -3, ",", "a"),
    ("a,b,c", 3, ",", None),
    ("a,b,c", -4, ",", None),
    ("a,,c", 1, ",", ""),
    ("sip:alice@example.com", 1, "@", "example.com"),
    ("abc", 0, ";", "abc"),
])
def test_s_select(value, index, sep, expected):
    assert tr("s.select", value, index, sep) == expected


def test_s_case_and_trim():
    assert tr("s.tolower", "AbC-Ü") == "abc-Ü"  # A-Z only, as OpenSIPS
    assert tr("s.toupper", "abc-1") == "ABC-1"
    assert tr("s.tolower", 5) == 5
    assert tr("s.trim", " \t a b \r\n") == "a b"
    assert tr("s.trimr", "  a  ") == "  a"
    assert tr("s.triml", "  a  ") == "a  "
    assert tr("s.trim", "") == ""
    assert tr("s.reverse", "abc") == "cba"


def test_s_hashes_and_encodings():
    assert tr("s.md5", "abc") == "900150983cd24fb0d6963f7d28e17f72"
    assert tr("s.sha256", "abc") == hashlib.sha256(b"abc").hexdigest()
    assert tr("s.sha1_hmac", "abc", "key") != tr("s.sha1_hmac", "abc", "other")
    assert tr("s.encode.hexa", "abc") == "616263"
    assert tr("s.encode.hexa", "") == ""
    assert tr("s.decode.hexa", "616263") == "abc"
    assert tr("s.decode.hexa", "4A4b") == "JK"
    for bad in ("6162a", "zz", "61 62"):
        with pytest.raises(ValueError):
            tr("s.decode.hexa", bad)
    assert tr("s.b64encode", "hello") == "aGVsbG8="
    assert tr("s.b64decode", "aGVsbG8=") == "hello"
    with pytest.raises(ValueError):
        tr("s.b64decode", "not base64!")
    assert tr("s.hex2dec", "ff") == 255
    assert tr("s.hex2dec", "0x10") == 16
    with pytest.raises(ValueError):
        tr("s.hex2dec", "xyz")
    assert tr("s.dec2hex", 255) == "ff"
    assert tr("s.dec2hex", "16") == "10"
    assert tr("s.dec2hex", -1) == "ffffffff"
    with pytest.raises(ValueError):
        tr("s.dec2hex", "ten")


def test_binary_values_round_trip():
    raw = tr("s.decode.hexa", "00ff80")
    assert tr("s.encode.hexa", raw) == "00ff80"


def test_s_escapes():
    assert tr("s.escape.common", "it's \"x\" \\") == "it\\'s \\\"x\\\" \\\\"
    assert tr("s.unescape.common", "it\\'s \\\"x\\\" \\\\") == "it's \"x\" \\"
    assert tr("s.unescape.common", "a\\qb") == "a\\qb"  # unknown escapes stay
    assert tr("s.escape.user", "a b@c;d") == "a%20b%40c;d"
    assert tr("s.unescape.user", "a%20b%40c") == "a b@c"
    assert tr("s.escape.param", "a b;c=d") == "a%20b%3bc%3dd"
    assert tr("s.unescape.param", "a%3Bb") == "a;b"
    for bad in ("a%2", "a%zz", "%0a"):
        with pytest.raises(ValueError):
            tr("s.unescape.user", bad)
    with pytest.raises(ValueError):
        tr("s.escape.user", "tab\there")


@pytest.mark.parametrize("value,params,expected", [
    ("onetwothreeone", ("one",), 0),
    ("onetwothreeone", ("one", 3), 11),
    ("onetwothreeone", ("one", -11), 11),   # negative start from the end
    ("onetwothreeone", ("one", -25), 11),   # and wraps
    ("onetwothreeone", ("xyz",), None),
    ("ab", ("abc",), None),
    ("", ("a",), None),
])
def test_s_index(value, params, expected):
    assert tr("s.index", value, *params) == expected


def test_s_rindex():
    assert tr("s.rindex", "onetwothreeone", "one") == 11
    assert tr("s.rindex", "onetwothreeone", "one", 10) == 0
    assert tr("s.rindex", "abc", "z") is None


def test_s_fill_and_width():
    assert tr("s.fill.left", "123", "0", 5) == "00123"
    assert tr("s.fill.left", "12345", "0", 3) == "12345"
    assert tr("s.fill.left", "1", "ab", 6) == "babab1"  # as OpenSIPS: the odd remainder first
    assert tr("s.fill.right", "1", "ab", 6) == "1ababa"
    assert tr("s.fill.right", 7, "0", 3) == "700"
    assert tr("s.width", "abcdef", 3) == "abc"
    assert tr("s.width", "ab", 4) == "ab  "
    with pytest.raises(ValueError):
        SPECS["s.width"].fixup((0,))
    with pytest.raises(ValueError):
        SPECS["s.fill.left"].fixup(("", 3))
    assert len(tr("s.fill.left", "x", "0", 10**9)) == MAX_RESULT_LEN  # bounded


def test_kamailio_strip_family():
    assert tr("s.strip", "+4912345", 1) == "4912345"
    assert tr("s.strip", "ab", 5) == ""
    assert tr("s.striptail", "12345", 2) == "123"
    assert tr("s.stripto", "user@host", "@") == "@host"
    assert tr("s.stripto", "userhost", "@") == "userhost"


# --- uri. ---------------------------------------------------------------------------------------------

URI = "sip:alice:secret@example.com:5070;transport=TCP;lr;maddr=10.0.0.1;user=phone?Subject=hi&X=1"


def test_uri_parts():
    assert tr("uri.user", URI) == "alice"
    assert tr("uri.passwd", URI) == "secret"
    assert tr("uri.host", URI) == "example.com"
    assert tr("uri.domain", URI) == "example.com"
    assert tr("uri.port", URI) == 5070
    assert tr("uri.params", URI) == "transport=TCP;lr;maddr=10.0.0.1;user=phone"
    assert tr("uri.param", URI, "transport") == "TCP"
    assert tr("uri.param", URI, "TRANSPORT") == "TCP"  # names are case-insensitive
    assert tr("uri.param", URI, "lr") == ""  # a flag parameter is there but empty
    assert tr("uri.param", URI, "ttl") is None
    assert tr("uri.transport", URI) == "TCP"
    assert tr("uri.maddr", URI) == "10.0.0.1"
    assert tr("uri.uparam", URI) == "phone"
    assert tr("uri.lr", URI) is None  # OpenSIPS 3.x: empty -> NULL
    assert tr("uri.headers", URI) == "Subject=hi&X=1"
    assert tr("uri.scheme", URI) == "sip"
    assert tr("uri.schema", "SIPS:bob@example.com") == "sips"


def test_uri_missing_parts_are_null():
    uri = "sip:example.com"
    assert tr("uri.user", uri) is None
    assert tr("uri.passwd", uri) is None
    assert tr("uri.port", uri) is None
    assert tr("uri.params", uri) is None
    assert tr("uri.param", uri, "lr") is None
    assert tr("uri.transport", uri) is None
    assert tr("uri.headers", uri) is None


def test_uri_tel_and_ipv6():
    assert tr("uri.user", "tel:+4930123") == "+4930123"
    assert tr("uri.scheme", "tel:+4930123") == "tel"
    assert tr("uri.host", "sip:bob@[2001:db8::1]:5060") == "[2001:db8::1]"
    assert tr("uri.port", "sip:bob@[2001:db8::1]:5060") == 5060


@pytest.mark.parametrize("bad", ["", "not a uri", "alice@example.com", "http://example.com", "sip:", 42])
def test_uri_bad_input_is_error(bad):
    with pytest.raises(ValueError):
        tr("uri.user", bad)


# --- param. -------------------------------------------------------------------------------------------

PARAMS = 'expires=3600;q=0.5;+sip.instance="<urn:uuid:1>";lr'


def test_param_list():
    assert tr("param.value", PARAMS, "expires") == "3600"
    assert tr("param.value", PARAMS, "Q") == "0.5"
    assert tr("param.value", PARAMS, "+sip.instance") == "<urn:uuid:1>"
    assert tr("param.value", PARAMS, "lr") == ""
    assert tr("param.value", PARAMS, "nope") is None
    assert tr("param.count", PARAMS) == 4
    assert tr("param.name", PARAMS, 0) == "expires"
    assert tr("param.name", PARAMS, -1) == "lr"
    assert tr("param.name", PARAMS, 9) is None
    assert tr("param.valueat", PARAMS, 1) == "0.5"
    assert tr("param.valueat", PARAMS, -4) == "3600"
    assert tr("param.exist", PARAMS, "lr") == 1
    assert tr("param.exist", PARAMS, "ttl") == 0
    assert tr("param.value", ";a=1;b=2", "b") == "2"  # a leading ';' is tolerated
    assert tr("param.value", "a=1,b=2", "b", ",") == "2"  # optional separator


@pytest.mark.parametrize("bad", ["", ";;", "a=1;;b=2", 'a="unterminated', 7])
def test_param_bad_input_is_error(bad):
    with pytest.raises(ValueError):
        tr("param.count", bad)


# --- nameaddr. ----------------------------------------------------------------------------------------

def test_nameaddr():
    na = '"Alice A." <sip:alice@example.com;transport=tcp>;tag=a1b2;expires=60'
    assert tr("nameaddr.name", na) == '"Alice A."'  # as written, quotes kept (OpenSIPS)
    assert tr("nameaddr.uri", na) == "sip:alice@example.com;transport=tcp"
    assert tr("nameaddr.param", na, "tag") == "a1b2"
    assert tr("nameaddr.param", na, "expires") == "60"
    assert tr("nameaddr.param", na, "foo") is None
    assert tr("nameaddr.params", na) == "tag=a1b2;expires=60"
    assert tr("nameaddr.len", na) == len('"Alice A." <sip:alice@example.com;transport=tcp>')
    assert tr("nameaddr.name", "Bob <sip:bob@b.com>") == "Bob"
    assert tr("nameaddr.name", "<sip:bob@b.com>") is None
    assert tr("nameaddr.params", "<sip:bob@b.com>") is None
    # addr-spec form: parameters after ';' belong to the header, not the URI (RFC 3261 20.10)
    assert tr("nameaddr.uri", "sip:bob@b.com;tag=9") == "sip:bob@b.com"
    assert tr("nameaddr.param", "sip:bob@b.com;tag=9", "tag") == "9"
    assert tr("nameaddr.name", '"a \\"quoted\\" name" <sip:x@y>') == '"a \\"quoted\\" name"'


@pytest.mark.parametrize("bad", ["", "just text", "<sip:bob@b.com", '"unterminated <sip:a@b>',
                                 '"Name" sip:a@b', "<sip:a@b> junk", "<>"])
def test_nameaddr_bad_input_is_error(bad):
    with pytest.raises(ValueError):
        tr("nameaddr.uri", bad)


# --- csv. ---------------------------------------------------------------------------------------------

def test_csv():
    rec = 'alice,"smith, jr",,"say ""hi"""'
    assert tr("csv.count", rec) == 4
    assert tr("csv.value", rec, 0) == "alice"
    assert tr("csv.value", rec, 1) == "smith, jr"
    assert tr("csv.value", rec, 2) == ""
    assert tr("csv.value", rec, 3) == 'say "hi"'
    assert tr("csv.value", rec, -1) == 'say "hi"'
    assert tr("csv.count", "one") == 1
    for idx in (4, -5):
        with pytest.raises(ValueError):
            tr("csv.value", rec, idx)
    with pytest.raises(ValueError):
        tr("csv.count", "")
    with pytest.raises(ValueError):
        tr("csv.count", 'a,"b')


# --- re.subst -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expr,expected", [
    ("sip:alice@example.com", r"/^sip:([^@]+)@(.*)$/\2:\1/", "example.com:alice"),
    ("aaa", "/a/b/", "baa"),
    ("aaa", "/a/b/g", "bbb"),
    ("AbA", "/a/x/gi", "xbx"),
    ("abc", "/z/y/", "abc"),                      # no match: unchanged
    ("a/b", r"/\//-/g", "a-b"),                   # escaped delimiter in the regex
    ("ab", r"/b/\//", "a/"),                      # escaped delimiter in the replacement
    ("abc", r"#b#[\0]#", "a[b]c"),                # other delimiter, \0 = whole match
    ("a\nb", "/a.b/X/", "X"),                     # POSIX: '.' matches a newline by default
    ("a\nb", "/a.b/X/s", "a\nb"),                 # ... not with the s flag (REG_NEWLINE)
    ("x", r"/(y)?x/[\1]/", "[]"),                 # unmatched group is empty
])
def test_re_subst(value, expr, expected):
    assert tr("re.subst", value, expr) == expected


def test_re_subst_commas_split_by_the_script_are_joined_back():
    spec = SPECS["re.subst"]
    (expr,) = spec.fixup(("/a", "b/x/g"))  # the script wrote {re.subst,/a,b/x/g}
    assert spec.fn("a,b,a,b", expr) == "x,x"


def test_re_subst_fixup_compiles_at_load_time():
    (expr,) = SPECS["re.subst"].fixup(("/a(b)/\\1/",))
    assert isinstance(expr, SubstExpr)
    for bad in ("/(unclosed/x/", "/a/b", "abc", "/a/b/q", "/a/\\2/", "ab"):
        with pytest.raises(ValueError):
            SPECS["re.subst"].fixup((bad,))


def test_re_subst_on_empty_value_is_error():
    with pytest.raises(ValueError):
        tr("re.subst", "", "/a/b/")


# --- ip. ----------------------------------------------------------------------------------------------

def test_ip():
    assert tr("ip.isip", "10.0.0.1") == 1
    assert tr("ip.isip", "[2001:db8::1]") == 1
    assert tr("ip.isip", "example.com") == 0
    assert tr("ip.isip4", "10.0.0.1") == 1
    assert tr("ip.isip4", "::1") == 0
    assert tr("ip.isip6", "::1") == 1
    packed = tr("ip.pton", "192.168.1.2")
    assert tr("ip.ntop", packed) == "192.168.1.2"
    assert tr("ip.family", packed) == "INET"
    assert tr("ip.family", tr("ip.pton", "::1")) == "INET6"
    assert tr("ip.ntop", tr("ip.pton", "2001:db8::1")) == "2001:db8::1"
    assert tr("ip.matches", "10.1.2.3", "10.0.0.0/8") == 1
    assert tr("ip.matches", "11.1.2.3", "10.0.0.0/8") == 0
    assert tr("ip.isprivate", "172.20.0.1") == 1
    assert tr("ip.isprivate", "8.8.8.8") == 0
    with pytest.raises(ValueError):
        tr("ip.pton", "not-an-ip")
    with pytest.raises(ValueError):
        tr("ip.ntop", "abc")
    with pytest.raises(ValueError):
        tr("ip.matches", "::1", "10.0.0.0/8")
    with pytest.raises(ValueError):
        SPECS["ip.matches"].fixup(("10.0.0.0",))


def test_chaining_like_a_script():
    # $(ct{nameaddr.uri}{uri.param,transport}{s.tolower})
    ct = '<sip:alice@10.0.0.1:5060;transport=TCP>;expires=60'
    value = ct
    for name, params in (("nameaddr.uri", ()), ("uri.param", ("transport",)), ("s.tolower", ())):
        value = tr(name, value, *params)
    assert value == "tcp"


def test_params_as_the_script_writes_them():
    # OpenSIPS skips the whitespace around a param and allows quoting one
    assert tr("param.value", "a=1;b=2", " b ") == "2"
    assert tr("uri.param", "sip:a@b;transport=tcp", " transport") == "tcp"
    assert tr("s.fill.left", "7", " 0", " 3") == "007"
    assert tr("s.fill.left", "7", "' '", 3) == "  7"
    assert tr("s.fill.right", "7", " ", 3) == "7  "  # a whitespace-only pad is kept
    # a ',' separator reaches the transformation as two empty params: {s.select,1,,}
    assert tr("s.select", "a,b,c", 1, "", "") == "b"
    assert tr("s.select", "a b c", 2, " ") == "c"
    assert tr("param.value", "a=1,b=2", "b", "", "") == "2"
    assert tr("param.count", "a=1,b=2,c", "", "") == 3
    assert tr("param.count", "a=1|b=2", "|") == 2
    # without the fixup (params computed at run time) the functions fold them the same way
    assert SPECS["s.select"].fn("a,b,c", 2, "", "") == "c"
    assert SPECS["param.value"].fn("a=1,b=2", "a", "", "") == "1"
    with pytest.raises(ValueError):
        SPECS["s.select"].fixup((1, ";;"))
    with pytest.raises(ValueError):
        SPECS["uri.param"].fixup(("  ",))
