"""Project-level views that belong to no app."""

from __future__ import annotations

from django.core import signing
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from myspinbot.storage import ArtifactNotFound, resolve_download_token


@require_GET
def storage_download(request: HttpRequest, token: str) -> FileResponse:
    """Serve a local-folder artifact to whoever holds an unexpired signed link."""
    try:
        store, key = resolve_download_token(token)
        meta = store.stat(key)
        handle = store.open(key)
    except (signing.BadSignature, ArtifactNotFound, KeyError, ValueError):
        raise Http404("link expired or unknown") from None
    response = FileResponse(
        handle, content_type=meta.content_type, as_attachment=True, filename=key.rsplit("/", 1)[-1]
    )
    response["Content-Length"] = str(meta.size_bytes)
    return response
