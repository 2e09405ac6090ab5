"""The small parsers of the resolver: the hosts file and dns_nameservers; any input gives a table or the
layer's own error, never a crash."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routescript.core.config import parse_nameservers
from routescript.resolve.hosts_file import HostsFile, parse_hosts


def test_hosts_file_lines() -> None:
    table = parse_hosts("127.0.0.1\tlocalhost loopback\n::1 localhost ip6-localhost\n"
                        "# 10.0.0.1 commented\n10.0.0.2 Gw.Lan. # trailing comment\nnot-an-ip name\n"
                        "10.0.0.3\n0:0:0:0:0:0:0:1 ip6-loopback\n10.0.0.2 gw.lan\n")
    assert table == {"localhost": ("127.0.0.1", "::1"), "loopback": ("127.0.0.1",),
                     "ip6-localhost": ("::1",), "gw.lan": ("10.0.0.2",), "ip6-loopback": ("::1",)}


def test_missing_hosts_file_lists_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """And says so once (a chroot without /etc/hosts), not at every recheck."""
    hosts = HostsFile("/nonexistent/hosts")
    with caplog.at_level(logging.INFO, "routescript.resolve"):
        assert hosts.lookup("localhost", 0.0) is None
        assert hosts.lookup("localhost", 100.0) is None
    assert [r.getMessage() for r in caplog.records] == [
        "hosts file /nonexistent/hosts not read (No such file or directory): names resolve through DNS only"]


@given(st.text(max_size=400))
def test_parse_hosts_takes_any_text(text: str) -> None:
    for name, addresses in parse_hosts(text).items():
        assert name == name.lower() and addresses


@given(st.text(max_size=60))
def test_parse_nameservers_gives_servers_or_value_error(text: str) -> None:
    try:
        servers = parse_nameservers(text)
    except ValueError:
        return
    assert all(0 < port < 65536 for _host, port in servers)
