"""The values of core parameters as the script gives them, typed: log levels by number or name, yes/no,
integers (decimal, 0x.., or a log level's name), strings, IP networks, DNS servers. Pure functions: a bad
value is a ValueError saying what was expected; config.py turns it into a ConfigError at the line."""

from __future__ import annotations

from .netlist import NetworkList

Pos = tuple[str, int, int]   # (file, line, column) of a script assignment

# OpenSIPS log levels (dprint.h).
L_ALERT, L_CRIT, L_ERR, L_WARN, L_NOTICE, L_INFO, L_DBG = -3, -2, -1, 1, 2, 3, 4
LOG_LEVEL_NAMES = {"L_ALERT": L_ALERT, "L_CRIT": L_CRIT, "L_ERR": L_ERR, "L_WARN": L_WARN,
                   "L_NOTICE": L_NOTICE, "L_INFO": L_INFO, "L_DBG": L_DBG}

LOG_FORMATS = ("plain_text", "json")


def as_bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    s = str(v).strip().lower()
    if s in ("yes", "true", "on", "1", "enable"):
        return True
    if s in ("no", "false", "off", "0", "disable"):
        return False
    raise ValueError(f"expects yes/no, got \"{v}\"")


def as_int(v: object) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    s = str(v).strip()
    if s in LOG_LEVEL_NAMES:
        return LOG_LEVEL_NAMES[s]
    try:
        return int(s, 0)
    except ValueError:
        raise ValueError(f"expects an integer, got \"{v}\"") from None


def parse_log_level(text: str) -> int:
    """A log level as `log_level` takes it: a number (-3 .. 4) or its name (L_ALERT .. L_DBG)."""
    try:
        level = as_int(text)
    except ValueError:
        raise ValueError(f"expects a log level (-3 .. 4 or {', '.join(LOG_LEVEL_NAMES)})") from None
    if not L_ALERT <= level <= L_DBG:
        raise ValueError(f"log level {level} out of range ({L_ALERT} .. {L_DBG})")
    return level


def as_str(v: object) -> str:
    return str(v)


def as_networks(v: object) -> NetworkList:
    try:
        return NetworkList.parse(str(v))
    except ValueError as exc:
        raise ValueError(f"expects IP addresses or networks: {exc}") from None


# A KNOWN_GLOBALS kind -> the function typing a value of it ("socket" is config_sockets.py's).
KIND_PARSERS = {"int": as_int, "bool": as_bool, "str": as_str, "networks": as_networks}


def parse_nameservers(text: str) -> tuple[tuple[str, int], ...]:
    """"127.0.0.1:5353, [::1]:53, 10.0.0.1" -> ((address, port), ...); port 53 when none is given."""
    import ipaddress

    servers: list[tuple[str, int]] = []
    for item in text.replace(",", " ").split():
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"bad server \"{item}\" (expected address[:port])")
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit():
                raise ValueError(f"bad port in \"{item}\"")
            port = int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"\"{item}\" is not an IP address (a DNS server is given by address)") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range in \"{item}\"")
        servers.append((host, port))
    return tuple(servers)
