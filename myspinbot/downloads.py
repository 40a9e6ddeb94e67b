"""A stored object over HTTP: single byte ranges and conditional requests.

:func:`serve` answers for every route that hands out stored bytes (the authenticated
artifact download and the local store's signed links), from either store:

- ``Accept-Ranges: bytes`` on every answer; ``ETag`` is the object's sha256 in quotes (a
  strong validator: it names exactly these bytes), ``Last-Modified`` its creation time;
  ``Cache-Control: private, no-cache``: a browser keeps the bytes but asks again, and
  the answer is a 304 without a body while they are unchanged.
- ``If-None-Match`` naming the ETag (or ``*``) is a 304; without ``If-None-Match``, an
  ``If-Modified-Since`` not older than ``Last-Modified`` is a 304 too.
- ``Range: bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` (one range) is a 206 with
  ``Content-Range``; only that range is read from the store (an S3 ranged GET). A range
  that starts at or past the end (or ``-0``) is a 416 with ``Content-Range: bytes */size``.
  Several ranges, another unit or a malformed header are ignored, as RFC 9110 §14.2 allows:
  200 with the whole object.
- ``If-Range`` holding anything but the current ETag (or ``Last-Modified`` date) turns the
  range off: 200 with the whole object, so a client never splices two versions.

Under ASGI the body is read chunk by chunk off the event loop, so a long video is never
held in memory whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import (
    content_disposition_header,
    http_date,
    parse_etags,
    parse_http_date_safe,
)

from myspinbot.storage import ArtifactStore

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Served:
    """What :func:`serve` needs to know about the object (from the database or the store)."""

    key: str
    size_bytes: int
    sha256: str
    content_type: str
    created_at: datetime
    filename: str


class _Unsatisfiable(Exception):
    pass


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The ``(start, end)`` (end included) a ``Range`` header asks of ``size`` bytes.

    ``None`` when the header is to be ignored (absent, malformed, several ranges, another
    unit); raises ``_Unsatisfiable`` when no byte of it exists.
    """
    match = _RANGE.match(header.replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # RFC 9110: an invalid range-spec, ignored
    if start >= size:
        raise _Unsatisfiable
    return start, min(end, size - 1)


def serve(request: HttpRequest, store: ArtifactStore, item: Served) -> HttpResponseBase:
    """The answer to a GET of ``item`` (see the module docstring)."""
    etag = f'"{item.sha256}"' if item.sha256 else ""
    modified = int(item.created_at.timestamp())
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Last-Modified": http_date(modified),
    }
    if etag:
        headers["ETag"] = etag
    if _not_modified(request, etag, modified):
        return HttpResponse(status=304, headers=headers)

    wanted: tuple[int, int] | None = None
    if _range_applies(request, etag, modified):
        try:
            wanted = byte_range(request.headers.get("Range", ""), item.size_bytes)
        except _Unsatisfiable:
            headers["Content-Range"] = f"bytes */{item.size_bytes}"
            return HttpResponse(
                f"range not satisfiable: the object has {item.size_bytes} bytes\n",
                status=416,
                content_type="text/plain",
                headers=headers,
            )
    if wanted is None:
        status, length = 200, item.size_bytes
        handle = store.open(item.key)
    else:
        start, end = wanted
        status, length = 206, end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{item.size_bytes}"
        handle = store.open_range(item.key, start, end)
    headers["Content-Length"] = str(length)
    headers["Content-Disposition"] = content_disposition_header(True, item.filename) or ""
    body = _AsyncChunks(handle) if isinstance(request, ASGIRequest) else _chunks(handle)
    return StreamingHttpResponse(
        body, status=status, content_type=item.content_type, headers=headers
    )


def _not_modified(request: HttpRequest, etag: str, modified: int) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x".
        return bool(etag) and ("*" in tags or etag in [t.removeprefix("W/") for t in tags])
    since = parse_http_date_safe(request.headers.get("If-Modified-Since", ""))
    return since is not None and modified <= since


def _range_applies(request: HttpRequest, etag: str, modified: int) -> bool:
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return bool(etag) and if_range == etag  # strong comparison: a weak tag never matches
    return parse_http_date_safe(if_range) == modified


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := handle.read(CHUNK):
            yield chunk
    finally:
        handle.close()


class _AsyncChunks:
    """The body for an ASGI server: each blocking read runs on a worker thread."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = sync_to_async(self._handle.read, thread_sensitive=False)
        while chunk := await read(CHUNK):
            yield chunk

    def close(self) -> None:
        """Called by the response when it is done (sent or abandoned)."""
        self._handle.close()
