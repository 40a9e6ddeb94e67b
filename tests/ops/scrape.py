"""Reading Prometheus text output in tests."""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

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
