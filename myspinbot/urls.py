"""URL routes of the project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from myspinbot import health, views
from myspinbot.api import api
from myspinbot.metrics.access import metrics_view

# The admin index links Flower and the metrics (myspinbot/templates/admin/).
admin.site.index_template = "admin/operations_index.html"

urlpatterns = [
    path("api/", api.urls),
    path("healthz", health.healthz, name="healthz"),
    # The original system's liveness route, with its answer ({"status": "ok"}).
    path("health", health.healthz, name="health"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("storage/<str:token>", views.storage_download, name="storage-download"),
    path("admin/", admin.site.urls),
    path("", include("apps.web.urls")),
]
