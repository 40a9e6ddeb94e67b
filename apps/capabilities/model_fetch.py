"""Fetching the manifest's models from the hub (``HF_ENDPOINT``) with ``huggingface_hub``.

Each file is downloaded to ``<file>.partial`` (appended to on the next run, so an
interrupted download resumes where it stopped), its sha256 checked against the manifest
or, where the manifest does not pin one, against the digest the hub states for it; only
then is it moved into place and registered in the store. ``huggingface_hub`` is imported
here, inside :func:`fetch`, and nowhere the web process reaches.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from myspinbot.model_store import SHA256, ModelEntry, ModelFile, ModelStore, sha256_file

Say = Callable[[str], None]
GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


class FetchError(RuntimeError):
    """A fetch that did not complete; ``retryable`` says whether running it again may help."""

    retryable = True


class Offline(FetchError):
    retryable = False


class DiskFull(FetchError):
    retryable = False


class DigestMismatch(FetchError):
    pass


@dataclass(frozen=True)
class Fetched:
    path: str
    downloaded_bytes: int
    resumed_from: int
    sha256: str
    checked_against: str  # Expected.source


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must hash to: the manifest's sha256 where pinned, else what
    the hub states: the sha256 of a file it keeps in LFS (weights), or the git blob id
    (sha1) of a small file it keeps in git (configs)."""

    digest: str
    kind: str  # sha256 | git-sha1
    source: str  # "sha256 pinned in the manifest", "the hub's sha256", "the hub's git sha1"

    @classmethod
    def of(cls, file: ModelFile, etag: str | None) -> Expected:
        if file.sha256:
            return cls(file.sha256, "sha256", "sha256 pinned in the manifest")
        if etag and SHA256.fullmatch(etag):
            return cls(etag, "sha256", "not pinned: the hub's sha256")
        if etag and GIT_SHA1.fullmatch(etag):
            return cls(etag, "git-sha1", "not pinned: the hub's git sha1")
        raise FetchError(f"{file.path}: not pinned in the manifest and the hub states no digest")

    def actual(self, path: Path) -> str:
        if self.kind == "sha256":
            return sha256_file(path)
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def matches(self, path: Path) -> bool:
        return self.actual(path) == self.digest


def refuse_if_offline() -> None:
    if settings.HF_HUB_OFFLINE:
        raise Offline(
            "HF_HUB_OFFLINE is set: this machine downloads no models. Fetch on a machine "
            "with network into the same model root (or unset HF_HUB_OFFLINE), then run "
            "`python manage.py models verify`."
        )


def _free_bytes(folder: Path) -> int:
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def fetch(
    store: ModelStore,
    entry: ModelEntry,
    *,
    say: Say = print,
    progress: bool = True,
    timeout: float = 30.0,
) -> list[Fetched]:
    """Install every file of ``entry`` that is not present; the files fetched.

    Raises :class:`Offline`, :class:`DiskFull` (nothing registered; the ``.partial`` file
    stays for the next run), :class:`DigestMismatch` (the download is discarded) or
    :class:`FetchError` for a hub that does not answer or does not have the file.
    """
    refuse_if_offline()
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    bar = _progress_bar(shown=progress)
    revision = entry.revision or "main"
    fetched: list[Fetched] = []
    for file in entry.files:
        state = store.file_state(entry, file)
        if state.state == "present":
            continue
        url = hf_hub_url(entry.repo_id, file.path, revision=revision, endpoint=settings.HF_ENDPOINT)
        try:
            meta = get_hf_file_metadata(url, timeout=timeout)
        except HfHubHTTPError as error:
            raise FetchError(f"{entry.repo_id}/{file.path} at {revision}: {error}") from error
        except Exception as error:  # the hub's HTTP client raises its own connection errors
            raise FetchError(
                f"the hub at {settings.HF_ENDPOINT} did not answer for "
                f"{entry.repo_id}/{file.path}: {error}"
            ) from error
        size = file.size if file.size is not None else meta.size
        if file.size is not None and meta.size is not None and meta.size != file.size:
            raise DigestMismatch(
                f"{file.path}: the hub serves {meta.size} bytes, the manifest pins {file.size}"
            )
        expected = Expected.of(file, meta.etag)
        final = store.file_path(entry, file)
        if state.state in ("unverified", "corrupt") and expected.matches(final):
            digest = sha256_file(final)
            store.register(entry, file, digest, source=expected.source, commit=meta.commit_hash)
            say(f"  {file.path}: already here, {expected.source} matches")
            continue
        fetched.append(_download(store, entry, file, url, meta, size, expected, say, bar))
    return fetched


def _progress_bar(*, shown: bool) -> type:
    """The hub client's progress bar, on or off whether or not stderr is a terminal (it
    hides itself off a terminal; `docker compose run -T` and logs should still show it)."""
    from huggingface_hub.utils import tqdm

    class Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = not shown
            super().__init__(*args, **kwargs)

    return Bar


def _headers(url: str, location: str) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers: dict[str, str] = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if urlparse(location).netloc != urlparse(url).netloc:
        # (a CDN the hub redirects to gets no token of ours)
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    return headers


def _download(
    store: ModelStore,
    entry: ModelEntry,
    file: ModelFile,
    url: str,
    meta: Any,
    size: int | None,
    expected: Expected,
    say: Say,
    bar: type,
) -> Fetched:
    from huggingface_hub.file_download import http_get

    final = store.file_path(entry, file)
    partial = store.partial_path(entry, file)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        resume = partial.stat().st_size if partial.is_file() else 0
        if size is not None and resume > size:
            partial.unlink()
            resume = 0
        if size is not None and _free_bytes(partial.parent) < size - resume:
            raise DiskFull(_disk_full_message(partial.parent, file, size - resume))
        if resume:
            say(f"  {file.path}: resuming at {resume} of {size} bytes")
        with partial.open("ab") as handle:
            http_get(
                meta.location,
                handle,
                resume_size=resume,
                headers=_headers(url, meta.location),
                expected_size=size,
                displayed_filename=file.path,
                tqdm_class=bar,
            )
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFull(_disk_full_message(partial.parent, file, size)) from None
        raise FetchError(f"{file.path}: {error}") from error
    except DiskFull:
        raise
    except Exception as error:  # the hub's client raises its own types for HTTP and size errors
        raise FetchError(f"{file.path}: {error}") from error
    actual = expected.actual(partial)
    if actual != expected.digest:
        partial.unlink()
        raise DigestMismatch(
            f"{file.path}: {expected.kind} {actual} but expected {expected.digest} "
            f"({expected.source}); the download was discarded, run the fetch again"
        )
    digest = sha256_file(partial)
    partial.replace(final)
    store.register(entry, file, digest, source=expected.source, commit=meta.commit_hash)
    say(f"  {file.path}: {final.stat().st_size} bytes, {expected.source} matches")
    return Fetched(file.path, final.stat().st_size - resume, resume, digest, expected.source)


def _disk_full_message(folder: Path, file: ModelFile, needed: int | None) -> str:
    free = _free_bytes(folder)
    need = f"{needed} more bytes" if needed is not None else "more space"
    return (
        f"disk full: {file.path} needs {need} and {folder} has {free} bytes free. Nothing "
        "was registered; free space (or point MYSPINBOT_MODEL_ROOT elsewhere) and run the "
        "fetch again: it resumes from the .partial file"
    )
