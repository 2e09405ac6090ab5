"""Loading the presence module: every documented parameter with its default, library mode (no db_url)
refusing handle_publish/handle_subscribe at load time with the call's position, parameters whose feature
is not built refused when set to anything but the default, examples/presence.cfg loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.server import LoadError, Server
from routescript.modules.presence import PresenceModule

ROOT = Path(__file__).resolve().parents[2]

DOCUMENTED = {  # presence-module-doc.txt, 1.3: parameter -> documented default
    "db_url": None, "presentity_table": "presentity", "active_watchers_table": "active_watchers",
    "watchers_table": "watchers", "clean_period": 100, "db_update_period": 100, "expires_offset": 0,
    "max_expires_subscribe": 3600, "max_expires_publish": 3600, "server_address": None, "fallback2db": 0,
    "subs_htable_size": 9, "pres_htable_size": 9, "enable_sphere_check": 0, "waiting_subs_daysno": 3,
    "mix_dialog_presence": 0, "bla_presentity_spec": None, "bla_fix_remote_target": 1,
    "notify_offline_body": 0, "end_sub_on_timeout": 1,
}


# Clustering (docs/cluster.md): cluster_id / cluster_pres_events are OpenSIPS 3.x names (not in the 2.x
# document above); the sharing tag, ping interval and node timeout are ours.
CLUSTER = {"cluster_id": 0, "cluster_sharing_tag": None, "cluster_pres_events": None,
           "cluster_ping_interval": 5, "cluster_node_timeout": 30}
# OpenSIPS 3.x clusterer federation: declared so that setting them is refused with the reason.
FEDERATION = {"cluster_federation_mode": "disabled", "cluster_sharing_tags": None,
              "cluster_be_active_shtag": None}

# routescript's own bounds (docs/modules/presence.md, Parameters).
LIMITS = {"max_aggregated_body_size": 61440}


# Caps on the state kept (issue 15, docs/modules/presence.md): ours, not OpenSIPS's.
CAPS = {"max_subscriptions": 1_000_000, "max_subscriptions_per_source": 10_000, "max_presentities": 1_000_000,
        "trusted_sources": None}


def test_every_documented_parameter_with_its_default() -> None:
    expected = DOCUMENTED | CLUSTER | CAPS | LIMITS | FEDERATION
    assert {p.name: p.default for p in PresenceModule.params} == expected


@pytest.mark.parametrize(("modparams", "message"), [
    ('modparam("presence", "trusted_sources", "10.0.0.1, proxy.example.com")\n', "proxy.example.com"),
    ('modparam("presence", "trusted_sources", "10.0.0.1/8")\n', "10.0.0.1/8"),
    ('modparam("presence", "max_subscriptions_per_source", -1)\n', "must not be negative"),
])
def test_cap_parameters_checked_at_load(tmp_path: Path, modparams: str, message: str) -> None:
    mp = f'modparam("presence", "db_url", "sqlite://{tmp_path}/x.sqlite")\n{modparams}'
    with pytest.raises(LoadError) as info:
        Server().load(cfg(tmp_path, mp, "    exit;\n"))
    assert message in str(info.value)


@pytest.mark.parametrize(("modparams", "message"), [
    ('modparam("presence", "cluster_id", 1)\n', "cluster_sharing_tag"),
    ('modparam("presence", "cluster_id", 1)\nmodparam("presence", "cluster_sharing_tag", "n1")\n',
     "needs a PostgreSQL or MySQL db_url"),
    (('modparam("presence", "cluster_id", 1)\nmodparam("presence", "cluster_sharing_tag", "n1")\n'
      'modparam("presence", "cluster_node_timeout", 6)\n'), "above twice the ping interval"),
])
def test_cluster_parameters_checked_at_load(tmp_path: Path, modparams: str, message: str) -> None:
    mp = f'modparam("presence", "db_url", "sqlite://{tmp_path}/x.sqlite")\n{modparams}'
    with pytest.raises(LoadError) as info:
        Server().load(cfg(tmp_path, mp, "    exit;\n"))
    assert message in str(info.value)


def test_cluster_examples_load_and_imply_fallback2db() -> None:
    for name in ("cluster-node1.cfg", "cluster-node2.cfg"):
        server = Server()
        server.load(str(ROOT / "examples" / name))
        presence = server.modules.get("presence")
        assert presence is not None and presence.cluster_config is not None
        assert presence.cluster_config.node_id == name.split("-")[1].removesuffix(".cfg")
        assert presence.param("fallback2db") == 1 and presence.cluster_config.node_timeout == 30


def cfg(tmp_path: Path, modparams: str, body: str) -> str:
    path = tmp_path / "p.cfg"
    path.write_text('socket = udp:127.0.0.1:0\nloadmodule "sl.so"\nloadmodule "presence.so"\n'
                    f'loadmodule "presence_xml.so"\n{modparams}route {{\n{body}}}\n')
    return str(path)


def with_db(tmp_path: Path, param: str, value: object) -> str:
    """modparams: an SQLite db_url, then presence's `param` set to `value` (as script text)."""
    return (f'modparam("presence", "db_url", "sqlite://{tmp_path}/x.sqlite")\n'
            f'modparam("presence", "{param}", {value})\n')


def test_library_mode_refuses_the_functions_at_their_calls(tmp_path: Path) -> None:
    path = cfg(tmp_path, "",
               "    if (is_method(\"PUBLISH\")) { handle_publish(); }\n    handle_subscribe(\"1\");\n"
               .replace('is_method("PUBLISH")', "1"))
    with pytest.raises(LoadError) as info:
        Server().load(path)
    texts = [str(d) for d in info.value.diagnostics]
    assert texts[0].startswith(f"{path}:6:14: handle_publish(): presence runs as a library")
    assert texts[1].startswith(f"{path}:7:5: handle_subscribe(): presence runs as a library")
    assert all("db_url" in t for t in texts)


def test_library_mode_loads_without_calls(tmp_path: Path) -> None:
    server = Server()
    server.load(cfg(tmp_path, "", "    exit;\n"))
    presence = server.modules.get("presence")
    assert presence is not None and set(presence.refused) == {"handle_publish", "handle_subscribe"}
    assert presence.contains_event("presence") is not None     # event packages still register


@pytest.mark.parametrize("param,value", [("cluster_federation_mode", '"full-sharing"'),
                                         ("cluster_sharing_tags", '"vip/1"'),
                                         ("cluster_be_active_shtag", '"vip"')])
def test_later_parameters_refused_when_set(tmp_path: Path, param: str, value: object) -> None:
    mp = with_db(tmp_path, param, value)
    with pytest.raises(LoadError) as info:
        Server().load(cfg(tmp_path, mp, "    exit;\n"))
    text = str(info.value.diagnostics[0])
    assert param in text and "not supported yet" in text


@pytest.mark.parametrize("param,value", [("enable_sphere_check", 0), ("enable_sphere_check", 1),
                                         ("fallback2db", 1), ("bla_fix_remote_target", 1),
                                         ("bla_fix_remote_target", 0), ("waiting_subs_daysno", 5),
                                         ("waiting_subs_daysno", 0), ("bla_presentity_spec", '"$var(bla)"'),
                                         ("bla_presentity_spec", '"$avp(bla_pres)"'),
                                         ("mix_dialog_presence", 1)])
def test_default_or_built_values_accepted(tmp_path: Path, param: str, value: object) -> None:
    mp = with_db(tmp_path, param, value)
    Server().load(cfg(tmp_path, mp, "    handle_publish();\n"))


@pytest.mark.parametrize("param,value,why", [
    ("waiting_subs_daysno", -1, "must not be negative"),
    ("bla_presentity_spec", '"var(bla)"', "not a pseudo-variable"),
])
def test_bad_values_refused(tmp_path: Path, param: str, value: object, why: str) -> None:
    mp = with_db(tmp_path, param, value)
    with pytest.raises(LoadError) as info:
        Server().load(cfg(tmp_path, mp, "    exit;\n"))
    assert why in str(info.value.diagnostics[0])


def test_handle_subscribe_sharing_tag_refused_at_its_call(tmp_path: Path) -> None:
    mp = f'modparam("presence", "db_url", "sqlite://{tmp_path}/x.sqlite")\n'
    path = cfg(tmp_path, mp, '    handle_subscribe(1, "vip");\n')
    with pytest.raises(LoadError) as info:
        Server().load(path)
    text = str(info.value.diagnostics[0])
    assert text.startswith(f"{path}:7:25: argument 2 of handle_subscribe(): the sharing_tag argument is not "
                           "supported") and "docs/cluster.md" in text


def test_waiting_subs_daysno_capped_at_30(tmp_path: Path) -> None:
    mp = with_db(tmp_path, "waiting_subs_daysno", 90)
    server = Server()
    server.load(cfg(tmp_path, mp, "    exit;\n"))
    presence = server.modules.get("presence")
    assert presence is not None and presence.param("waiting_subs_daysno") == 30
    assert presence.settings().waiting_subs_daysno == 30


def test_example_config_loads() -> None:
    loaded = Server().load(str(ROOT / "examples" / "presence.cfg"))
    assert not [w for w in loaded.warnings if "handle_" in str(w)]


@pytest.mark.parametrize(("force_active", "forced"), [
    (True, True), (False, False), (None, False), ("1", True), (" 1", True), ("0", False), (1, True),
    (0, False),
])
async def test_handle_subscribe_force_active_literal_fixed_at_load_or_read_per_call(force_active: object,
                                                                                     forced: bool) -> None:
    """A literal force_active becomes a bool at load time (its fixup, no work per request); a value
    given any other way (a variable, a direct call) is read as before: "1" / 1 force it."""
    from routescript.modules.presence.module import _truthy

    assert _truthy("1") is True and _truthy("0") is False
    got: list[bool] = []

    class Service:
        async def handle_subscribe(self, ctx: object, force: bool) -> int:
            got.append(force)
            return 1

    module = PresenceModule.__new__(PresenceModule)
    module.service = Service()   # type: ignore[assignment]
    assert await module.handle_subscribe(object(), force_active) == 1
    assert got == [forced]
