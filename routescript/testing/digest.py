"""The user agent's side of digest authentication (RFC 7616, RFC 8760), for tests and scenarios: answer
a 401/407 challenge with the right (or a wrong) password.

    resp = await client.send_request(req)                       # 401
    auth = authorization(resp.header("WWW-Authenticate"), "alice", "secret", "REGISTER", req.ruri)
    req2 = client.request("REGISTER", ..., headers=[("Authorization", auth)])
"""

from __future__ import annotations

import secrets

from routescript.modules.auth.digest import ALGORITHMS, calc_ha1, calc_response, session_ha1


def challenge_params(value: str) -> dict[str, str]:
    """The parameters of one WWW-Authenticate / Proxy-Authenticate value (`Digest realm="x", ...`)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {value!r}")
    params: dict[str, str] = {}
    for part in _split_commas(rest):
        name, _, raw = part.partition("=")
        params[name.strip().lower()] = raw.strip().strip('"')
    return params


def _split_commas(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def authorization(challenge: str, username: str, password: str, method: str, uri: str, *,
                  nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) value answering `challenge` for this request."""
    p = challenge_params(challenge)
    alg = ALGORITHMS[p.get("algorithm", "MD5").upper()]
    realm, nonce = p["realm"], p["nonce"]
    qop = "auth" if "auth" in [q.strip() for q in p.get("qop", "").split(",")] else None
    cnonce = cnonce or secrets.token_hex(8)
    ncv = f"{nc:08x}"
    ha1 = calc_ha1(alg, username, realm, password)
    if alg.sess:
        ha1 = session_ha1(alg, ha1, nonce, cnonce)
    response = calc_response(alg, ha1, nonce=nonce, method=method, uri=uri, qop=qop, nc=ncv, cnonce=cnonce)
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             f'response="{response}"', f"algorithm={alg.name}"]
    if qop:
        parts += [f"qop={qop}", f"nc={ncv}", f'cnonce="{cnonce}"']
    if "opaque" in p:
        parts.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(parts)
