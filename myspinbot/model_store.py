"""The model store: which weights of the manifest are installed under the model root.

The manifest (``myspinbot/models_manifest.json``, or ``MYSPINBOT_MODEL_MANIFEST``) names
every model a pipeline can use: hub repo, pinned revision, files with sha256 and size,
licence and the services that use it. ``python manage.py models fetch`` downloads a file
to ``<file>.partial``, checks its sha256, moves it into place and only then *registers*
it in ``<root>/.registry/<model>.json`` (sha256, size, modification time). So a partial or
corrupt file is never registered, and :meth:`ModelStore.state` (a ``stat`` per file, no
hashing: cheap enough for every capability report) calls a model

- ``present``: every file registered and unchanged since (same size and mtime);
- ``corrupt``: a file changed after registration, has the wrong size, or failed
  ``models verify``;
- ``unverified``: every file there, some put there by hand and never hashed (workers
  use them as they are; ``models verify`` registers them);
- ``missing``: anything else (not fetched, or half fetched: a ``.partial`` file).

Plain stdlib: the web process, the cpu worker and the gpu worker all read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).with_name("models_manifest.json")
REGISTRY = ".registry"
PARTIAL_SUFFIX = ".partial"
SHA256 = re.compile(r"[0-9a-f]{64}")
# A model folder under the root: relative, no "." or ".." segments (as gpu_common.MODEL_NAME).
FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}")
NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")


class ManifestError(ValueError):
    """The manifest file is malformed (a bug in the repository, not a user's input)."""


def fetch_command(name: str) -> str:
    return f"python manage.py models fetch {name}"


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str | None  # None: not pinned
    size: int | None  # None: not pinned


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    repo_id: str
    revision: str | None  # None: not pinned (the hub's main branch)
    folder: str
    licence: dict[str, str]
    services: tuple[str, ...]
    optional: bool
    files: tuple[ModelFile, ...]
    note: str = ""

    @property
    def pinned(self) -> bool:
        """Revision and every file's sha256 and size are pinned in the manifest."""
        return self.revision is not None and all(f.sha256 and f.size for f in self.files)

    @property
    def size_bytes(self) -> int | None:
        """Total size when every file's size is pinned, else None."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "folder": self.folder,
            "licence": dict(self.licence),
            "services": list(self.services),
            "optional": self.optional,
            "pinned": self.pinned,
            "size_bytes": self.size_bytes,
            "note": self.note,
        }


def _entry(raw: dict[str, Any]) -> ModelEntry:
    name = str(raw.get("name", ""))
    if not NAME.fullmatch(name):
        raise ManifestError(f"model name {name!r} is not a lower-case slug")
    folder = str(raw.get("folder", ""))
    if not FOLDER.fullmatch(folder):
        raise ManifestError(f"model {name}: folder {folder!r} is not a relative folder name")
    licence = raw.get("licence")
    if not isinstance(licence, dict) or not all(licence.get(k) for k in ("id", "name", "url")):
        raise ManifestError(f"model {name}: licence needs id, name and url")
    files = []
    for item in raw.get("files") or []:
        path, sha, size = str(item.get("path", "")), item.get("sha256"), item.get("size")
        if not path or path.startswith("/") or ".." in Path(path).parts:
            raise ManifestError(f"model {name}: file path {path!r} is not relative")
        if sha is not None and not SHA256.fullmatch(str(sha)):
            raise ManifestError(f"model {name}: {path} sha256 is not 64 hex digits")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ManifestError(f"model {name}: {path} size is not a byte count")
        files.append(ModelFile(path=path, sha256=sha, size=size))
    if not files:
        raise ManifestError(f"model {name}: no files")
    return ModelEntry(
        name=name,
        title=str(raw.get("title") or name),
        repo_id=str(raw["repo_id"]),
        revision=raw.get("revision"),
        folder=folder,
        licence={k: str(v) for k, v in licence.items()},
        services=tuple(str(s) for s in raw.get("services") or []),
        optional=bool(raw.get("optional", False)),
        files=tuple(files),
        note=str(raw.get("note", "")),
    )


def load_manifest(path: Path) -> dict[str, ModelEntry]:
    """The entries of the manifest at ``path`` by name; :class:`ManifestError` when bad."""
    data = json.loads(path.read_text())
    entries: dict[str, ModelEntry] = {}
    for raw in data.get("models", []):
        entry = _entry(raw)
        if entry.name in entries:
            raise ManifestError(f"model {entry.name} is listed twice")
        entries[entry.name] = entry
    return entries


@lru_cache(maxsize=4)
def _cached_manifest(path: str, mtime_ns: int) -> dict[str, ModelEntry]:
    return load_manifest(Path(path))


def manifest_path() -> Path:
    from django.conf import settings

    configured = getattr(settings, "MYSPINBOT_MODEL_MANIFEST", "")
    return Path(configured) if configured else MANIFEST_PATH


def get_manifest() -> dict[str, ModelEntry]:
    """The configured manifest (read again when the file changes)."""
    path = manifest_path()
    return _cached_manifest(str(path), path.stat().st_mtime_ns)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    path: str
    state: str  # present | missing | partial | unverified | corrupt
    size_bytes: int
    detail: str = ""


@dataclass(frozen=True)
class ModelState:
    entry: ModelEntry
    state: str  # present | unverified | missing | corrupt
    files: tuple[FileState, ...]
    detail: str

    @property
    def size_bytes(self) -> int:
        """Bytes of this model on disk now (finished files only)."""
        return sum(f.size_bytes for f in self.files if f.state != "partial")

    @property
    def usable(self) -> bool:
        """Whether a worker may load it: registered, or every file put there by hand (used
        as it is until ``models verify`` hashes it); never when missing or corrupt."""
        return self.state in ("present", "unverified")

    @property
    def command(self) -> str:
        """The command that makes this model present ("" when it is)."""
        if self.state == "present":
            return ""
        if self.state == "unverified":
            return f"python manage.py models verify {self.entry.name}"
        return fetch_command(self.entry.name)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.entry.to_json(),
            "state": self.state,
            "usable": self.usable,
            "detail": self.detail,
            "installed_bytes": self.size_bytes,
            "command": self.command,
        }


@dataclass(frozen=True)
class Verified:
    path: str
    result: str  # ok | corrupt | missing | unverified
    message: str


class ModelStore:
    """The model root's files and their registrations (one JSON file per model)."""

    def __init__(self, root: Path, manifest: dict[str, ModelEntry] | None = None) -> None:
        self.root = Path(root)
        self.manifest = manifest if manifest is not None else get_manifest()

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.manifest[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest))
            raise KeyError(f"no model {name!r} in the manifest (known: {known})") from None

    def folder(self, entry: ModelEntry) -> Path:
        return self.root / entry.folder

    def file_path(self, entry: ModelEntry, file: ModelFile) -> Path:
        return self.folder(entry) / file.path

    def partial_path(self, entry: ModelEntry, file: ModelFile) -> Path:
        path = self.file_path(entry, file)
        return path.with_name(path.name + PARTIAL_SUFFIX)

    def record_path(self, entry: ModelEntry) -> Path:
        return self.root / REGISTRY / f"{entry.name}.json"

    def record(self, entry: ModelEntry) -> dict[str, Any]:
        """The registration of ``entry``: ``{"files": {path: {...}}, "revision": ...}``."""
        try:
            data = json.loads(self.record_path(entry).read_text())
        except (OSError, ValueError):
            return {"files": {}}
        return data if isinstance(data.get("files"), dict) else {"files": {}}

    def _write_record(self, entry: ModelEntry, data: dict[str, Any]) -> None:
        path = self.record_path(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        temporary.replace(path)

    def register(
        self, entry: ModelEntry, file: ModelFile, sha256: str, *, source: str, commit: str | None
    ) -> None:
        """Record ``file`` (already in place, its sha256 checked) as installed."""
        stat = self.file_path(entry, file).stat()
        data = self.record(entry)
        data["files"][file.path] = {
            "sha256": sha256,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "checked_against": source,
        }
        if commit:
            data["revision"] = commit
        self._write_record(entry, data)

    def mark_corrupt(self, entry: ModelEntry, file: ModelFile, reason: str) -> None:
        data = self.record(entry)
        data["files"][file.path] = {**data["files"].get(file.path, {}), "corrupt": reason}
        self._write_record(entry, data)

    def file_state(self, entry: ModelEntry, file: ModelFile) -> FileState:
        recorded = self.record(entry)["files"].get(file.path)
        return self._file_state(entry, file, recorded)

    def _file_state(
        self, entry: ModelEntry, file: ModelFile, recorded: dict[str, Any] | None
    ) -> FileState:
        path = self.file_path(entry, file)
        try:
            stat = path.stat()
        except OSError:
            partial = self.partial_path(entry, file)
            if partial.is_file():
                size = partial.stat().st_size
                return FileState(file.path, "partial", size, f"{size} bytes downloaded")
            return FileState(file.path, "missing", 0)
        if recorded and recorded.get("corrupt"):
            return FileState(file.path, "corrupt", stat.st_size, str(recorded["corrupt"]))
        if file.size is not None and stat.st_size != file.size:
            return FileState(
                file.path, "corrupt", stat.st_size, f"{stat.st_size} bytes, expected {file.size}"
            )
        if not recorded:
            return FileState(file.path, "unverified", stat.st_size, "not verified")
        if file.sha256 and recorded.get("sha256") != file.sha256:
            return FileState(file.path, "corrupt", stat.st_size, "sha256 differs from the manifest")
        if (recorded.get("size"), recorded.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            return FileState(file.path, "corrupt", stat.st_size, "changed since it was verified")
        return FileState(file.path, "present", stat.st_size)

    def state(self, entry: ModelEntry) -> ModelState:
        recorded = self.record(entry)["files"]
        files = tuple(self._file_state(entry, f, recorded.get(f.path)) for f in entry.files)
        corrupt = [f for f in files if f.state == "corrupt"]
        if corrupt:
            detail = "; ".join(f"{f.path}: {f.detail}" for f in corrupt)
            return ModelState(entry, "corrupt", files, detail)
        absent = [f for f in files if f.state != "present"]
        if not absent:
            return ModelState(entry, "present", files, "")
        if all(f.state in ("unverified", "present") for f in files):
            detail = f"installed by hand, not verified: python manage.py models verify {entry.name}"
            return ModelState(entry, "unverified", files, detail)
        else:
            detail = f"{len(files) - len(absent)} of {len(files)} files installed"
        return ModelState(entry, "missing", files, detail)

    def states(self, names: Iterable[str] | None = None) -> list[ModelState]:
        chosen = self.manifest if names is None else {n: self.entry(n) for n in names}
        return [self.state(entry) for entry in chosen.values()]

    def verify(self, entry: ModelEntry) -> list[Verified]:
        """Hash every file of ``entry`` on disk and compare: with the manifest's sha256
        where pinned, else with the digest recorded when it was fetched (the hub's).
        A match registers the file; a mismatch marks it corrupt."""
        results = []
        recorded = self.record(entry)["files"]
        for file in entry.files:
            path = self.file_path(entry, file)
            if not path.is_file():
                results.append(Verified(file.path, "missing", "not installed"))
                continue
            digest = sha256_file(path)
            previous = recorded.get(file.path) or {}
            if file.sha256:
                expected, source = file.sha256, "pinned in the manifest"
            elif previous.get("sha256"):
                expected = str(previous["sha256"])
                source = (
                    "not pinned: the sha256 recorded at fetch, when the file matched "
                    f"{previous.get('checked_against', '?').removeprefix('not pinned: ')}"
                )
            else:
                results.append(
                    Verified(file.path, "unverified", f"not pinned and never fetched: {digest}")
                )
                continue
            if digest == expected:
                checked = str(previous.get("checked_against", "sha256 pinned in the manifest"))
                self.register(entry, file, digest, source=checked, commit=None)
                results.append(Verified(file.path, "ok", f"sha256 {digest} ({source})"))
            else:
                reason = f"sha256 {digest}, expected {expected} ({source})"
                self.mark_corrupt(entry, file, reason)
                results.append(Verified(file.path, "corrupt", reason))
        return results

    def remove(self, entry: ModelEntry) -> int:
        """Delete the files of ``entry`` (and partial downloads) and its registration;
        the bytes freed."""
        freed = 0
        self.record_path(entry).unlink(missing_ok=True)
        for file in entry.files:
            for path in (self.file_path(entry, file), self.partial_path(entry, file)):
                if path.is_file():
                    freed += path.stat().st_size
                    path.unlink()
        folder = self.folder(entry)
        for directory in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return freed

    def entry_for_ref(self, ref: str) -> ModelEntry | None:
        """The manifest model a model reference (folder or hub id) names, if any."""
        for entry in self.manifest.values():
            if ref in (entry.folder, entry.repo_id, entry.name):
                return entry
        return None


def default_store() -> ModelStore:
    from django.conf import settings

    return ModelStore(Path(settings.MYSPINBOT_MODEL_ROOT))
