"""Reading Prometheus text output in tests."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from testkit.services import REPO

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Samples:
    """Every sample of one scrape, by name and labels; also the metric families (with
    their types) the output declares, samples or not."""

    values: dict[Key, float]
    families: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a series that does not exist (yet)."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def minus(self, before: Samples) -> Samples:
        keys = self.values.keys() | before.values.keys()
        delta = {key: self.values.get(key, 0.0) - before.values.get(key, 0.0) for key in keys}
        return Samples(delta, self.families)

    def series_names(self) -> set[str]:
        """Names a query may use: each family's samples as Prometheus stores them."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
            "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
            "info": ("_info",),
        }
        names = set()
        for family, kind in self.families.items():
            names.update(family + suffix for suffix in suffixes.get(kind, ("",)))
        return names


def parse(text: str) -> Samples:
    values: dict[Key, float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Samples(values, families)


def scrape(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def promql_series(expr: str) -> set[str]:
    """Series names a PromQL expression reads: identifiers that are not functions,
    keywords, label names in ``by (...)`` / ``{...}``, durations or strings."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def dashboard_series() -> dict[str, set[str]]:
    """Dashboard file → series its queries read."""
    used: dict[str, set[str]] = {}
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used.setdefault(path.name, set()).update(promql_series(target["expr"]))
    return used
