"""prometheus - statistics for Prometheus over httpd (OpenSIPS prometheus module).

    loadmodule "httpd.so"
    loadmodule "prometheus.so"
    modparam("prometheus", "root", "metrics")                 # GET http://<ip>:<port>/metrics
    modparam("prometheus", "statistics", "all")               # or "rcv_requests core: presence:"
    modparam("prometheus", "group_mode", 1)                   # opensips_core_rcv_requests

Parameters as OpenSIPS 3.4 documents them: root ("metrics"), prefix ("opensips"), group_prefix (""),
delimiter ("_", between the prefix, the group and the name), group_label ("group"), group_mode
(0: no group; 1: the group in the name; 2: the group as a label named group_label), statistics
(space-separated names and `group:`s, or "all"; may be given several times; nothing is exported
until it is set). A name is `prefix + delimiter [+ group_prefix + group + delimiter] + statistic`,
with characters Prometheus does not allow replaced by "_".

The page is built with prometheus_client (a collector over server.statistics, printed by
generate_latest), read at each scrape, so statistics registered after start are seen. With worker
processes it runs in the supervisor and each scrape reads every worker's statistics merged, as MI
get_statistics does (MIRegistry.gather_statistics); a worker that does not answer gives a 503.
Counter or gauge as in OpenSIPS: functions and no-reset statistics are gauges, the rest counters.

Choice: prometheus_client prints a counter as `<name>_total` (the Prometheus convention), while
OpenSIPS prints it as `<name>` with `# TYPE <name> counter`. To keep the series names dashboards
and alerts written for OpenSIPS use, counters are exported by default under their OpenSIPS name as
untyped samples; `modparam("prometheus", "typed_counters", 1)` (ours) exports them as typed
counters named `<name>_total` instead. Values are printed as floats ("3.0"), as prometheus_client does.
`labels` (regex renaming into labels) is not built: setting it is refused at load.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param
from routescript.modules.httpd import bind_httpd

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost
    from routescript.core.stats import Statistics, StatVar

log = logging.getLogger("routescript.prometheus")

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")


def _group_mode(value: int) -> None:
    if value not in (0, 1, 2):
        raise ValueError(f"group_mode must be 0, 1 or 2, not {value}")


class PrometheusModule(Module):
    name = "prometheus"
    runs_in = "supervisor"   # on httpd; the workers' statistics merged (module docstring)
    depends = ("httpd",)
    params = (
        Param("root", str, "metrics", "the HTTP root path the metrics are served under"),
        Param("prefix", str, "opensips", "prefix of every metric name"),
        Param("group_prefix", str, "", "prefix of the group's name"),
        Param("delimiter", str, "_", "between prefix, group and name"),
        Param("group_label", str, "group", "the label holding the group when group_mode is 2"),
        Param("group_mode", int, 0, "0: no group, 1: group in the name, 2: group as a label",
              check=_group_mode),
        Param("statistics", str, None, "statistics and groups (group:) to export, or all", multi=True),
        Param("labels", str, None, "regex rules turning statistic names into labels", multi=True,
              later="the labels rules of OpenSIPS's prometheus module are not built"),
        Param("typed_counters", int, 0, "1: counters as typed Prometheus counters named <name>_total"),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.all = False
        self.groups: list[str] = []
        self.names: list[str] = []
        self._scraped: Statistics | None = None   # the statistics of the scrape being printed

    def check(self) -> None:
        root = (self.param("root") or "").strip("/")
        if not root or "/" in root:
            raise ConfigError(f"modparam(\"prometheus\", \"root\"): bad root \"{self.param('root')}\"")
        label = self.param("group_label")
        if self.param("group_mode") == 2 and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
            raise ConfigError(f"modparam(\"prometheus\", \"group_label\"): bad label name "
                              f"\"{self.param('group_label')}\"")
        for value in self.param("statistics") or []:
            for item in str(value).split():
                if item == "all":
                    self.all = True
                elif item.endswith(":") and len(item) > 1:
                    self.groups.append(item[:-1])
                else:
                    self.names.append(item)

    async def start(self) -> None:
        from prometheus_client.registry import CollectorRegistry

        httpd = bind_httpd(self.server)
        if httpd is None:  # depends= makes the loader refuse this already
            raise ConfigError("prometheus needs the httpd module")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatisticsCollector(self))
        httpd.register_httpdcb(self.name, self.param("root"), self.handle)

    async def stop(self) -> None:
        httpd = bind_httpd(self.server)
        if httpd is not None:
            httpd.unregister_httpdcb(self.param("root"))

    # ---------------------------------------------------------------- what is exported
    def selected(self) -> list[StatVar]:
        """The StatVars to export, in OpenSIPS's order: the groups listed, then the single statistics
        (or every statistic, for "all"); each once. A name not (yet) registered is skipped."""
        stats = self._scraped if self._scraped is not None else self.server.statistics
        if self.all:
            return stats.all()
        out: list[StatVar] = []
        seen: set[int] = set()
        for group in self.groups:
            for s in stats.module(group):
                if id(s) not in seen:
                    seen.add(id(s))
                    out.append(s)
        for name in self.names:
            one = stats.get(name)
            if one is not None and id(one) not in seen:
                seen.add(id(one))
                out.append(one)
        return out

    def metric_name(self, stat: Any) -> str:
        prefix, delim = self.param("prefix"), self.param("delimiter")
        name = prefix + delim
        if self.param("group_mode") == 1:
            name += self.param("group_prefix") + stat.module + delim
        name = _NOT_NAME.sub("_", name + stat.name)
        if name[:1].isdigit():  # "1xx_replies" with no prefix: keep the name valid, as OpenSIPS does
            name = "_" + name
        return name

    # ---------------------------------------------------------------- HTTP
    async def handle(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        if request.method != "GET":
            return web.Response(status=405, text="405 Method Not Allowed\n", headers={"Allow": "GET"})
        from routescript.mi.jsonrpc import JSONRPCError
        from routescript.mi.registry import existing_registry

        mi = existing_registry(self.server)
        gather = mi.gather_statistics if mi is not None else None
        if gather is not None:
            try:
                self._scraped = await gather()
            except JSONRPCError as exc:
                log.error("prometheus: %s", exc)
                return web.Response(status=503, text=f"503 Service Unavailable: {exc}\n")
        try:
            body = generate_latest(self.registry)   # reads self._scraped (no await in between)
        finally:
            self._scraped = None
        return web.Response(status=200, body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class StatisticsCollector:
    """A prometheus_client collector reading the server's statistics at each scrape."""

    def __init__(self, module: PrometheusModule) -> None:
        self.module = module

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

        mod = self.module
        mode = mod.param("group_mode")
        typed = bool(mod.param("typed_counters"))
        label_names = [mod.param("group_label")] if mode == 2 else []
        emitted: set[str] = set()
        for stat in mod.selected():
            name = mod.metric_name(stat)
            if name in emitted:
                # group_mode 0 and the same name in two groups: one series per name (the first).
                continue
            emitted.add(name)
            labels = [mod.param("group_prefix") + stat.module] if mode == 2 else []
            doc = f"{stat.module}:{stat.name}"
            family: Any
            if not stat.incremental:
                family = GaugeMetricFamily(name, doc, labels=label_names)
                family.add_metric(labels, stat.value)
            elif typed:
                family = CounterMetricFamily(name, doc, labels=label_names)
                family.add_metric(labels, stat.value)
            else:
                family = Metric(name, doc, "unknown")
                family.add_sample(name, dict(zip(label_names, labels, strict=True)), stat.value)
            yield family


MODULE = PrometheusModule
