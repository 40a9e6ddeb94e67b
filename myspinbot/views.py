"""Project-level views that belong to no app."""

from __future__ import annotations

from django.core import signing
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from myspinbot.downloads import Served, serve
from myspinbot.storage import ArtifactNotFound, resolve_download_token


@require_GET
def storage_download(request: HttpRequest, token: str) -> HttpResponseBase:
    """Serve a local-folder artifact to whoever holds an unexpired signed link, with
    byte ranges and conditional requests (``myspinbot.downloads``)."""
    try:
        store, key = resolve_download_token(token)
        meta = store.stat(key)
    except (signing.BadSignature, ArtifactNotFound, KeyError, ValueError):
        raise Http404("link expired or unknown") from None
    item = Served(
        key=key,
        size_bytes=meta.size_bytes,
        sha256=meta.sha256,
        content_type=meta.content_type,
        created_at=meta.created_at,
        filename=key.rsplit("/", 1)[-1],
    )
    return serve(request, store, item)
