from __future__ import annotations

from django.apps import AppConfig


class GraphsConfig(AppConfig):
    name = "apps.graphs"
    label = "graphs"
    verbose_name = "Graphs"
