"""The artifact store: one interface over S3 (boto3) and a local folder.

Every piece of code that reads or writes artifacts goes through ``get_artifact_store()``.
A write is all-or-nothing: a reader never sees a half-written object, and the
returned ``StoredObject`` carries the size and sha256 of exactly what was stored.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import io
import json
import mimetypes
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

CHUNK = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class StorageError(Exception):
    """Base of storage failures. ``retryable`` says whether trying again can help."""

    retryable = False


class StorageUnavailable(StorageError):
    """The backend did not answer (server down, timeout): retrying later can help."""

    retryable = True


class ArtifactNotFound(StorageError, KeyError):
    """No object under that key."""


class InvalidKey(StorageError, ValueError):
    """A key that could escape its folder or is not a plain relative path."""


@dataclass(frozen=True)
class StoredObject:
    """What the store knows about one object (the ``artifact.schema.json`` fields)."""

    bucket: str
    key: str
    size_bytes: int
    sha256: str
    content_type: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path (no ``..``, no leading ``/``)."""
    if len(key) > 512 or not _KEY.match(key) or ".." in key.split("/"):
        raise InvalidKey(f"invalid artifact key {key!r}")
    return key


def guess_content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class ArtifactStore(abc.ABC):
    """Bytes under keys in one bucket."""

    bucket: str

    def save_bytes(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key``, replacing any object there."""
        with tempfile.SpooledTemporaryFile(max_size=CHUNK * 8) as spool:
            spool.write(data)
            spool.seek(0)
            return self.save_file(key, spool, content_type)

    def save_file(
        self, key: str, source: str | os.PathLike[str] | IO[bytes], content_type: str | None = None
    ) -> StoredObject:
        """Store a file (a path or a binary file object read from its current position)."""
        check_key(key)
        content_type = content_type or guess_content_type(key)
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as handle:
                return self._save_stream(key, handle, content_type)
        return self._save_stream(key, source, content_type)

    @abc.abstractmethod
    def _save_stream(self, key: str, stream: IO[bytes], content_type: str) -> StoredObject: ...

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A binary file object reading the object; the caller closes it."""

    @abc.abstractmethod
    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """A binary file object reading bytes ``start`` to ``end`` (both included) of the
        object, fetched as that range only; the caller closes it."""

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    @abc.abstractmethod
    def stat(self, key: str) -> StoredObject:
        """Size, sha256 and content type of a stored object."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ArtifactNotFound:
            return False
        return True

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abc.abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """The keys of every stored object under the folder ``prefix`` (ends with ``/``)."""

    @abc.abstractmethod
    def download_url(self, key: str, expires_in: int) -> str:
        """A URL that lets anyone holding it read the object for ``expires_in`` seconds."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend answers now (readiness)."""


class _Window(io.RawIOBase):
    """At most ``length`` bytes of ``handle`` from its current position."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        count = self._handle.readinto(view)  # type: ignore[attr-defined]
        self._left -= count
        return int(count)

    def close(self) -> None:
        self._handle.close()
        super().close()


def _hash_into(stream: IO[bytes], sink: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        sink.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class LocalArtifactStore(ArtifactStore):
    """Objects as files under ``root/bucket``; metadata in a ``.meta.json`` beside each.

    Writes go to a temporary file in the same folder and are renamed into place,
    so a crash leaves either the old object or the new one.
    """

    def __init__(self, root: Path, bucket: str = "artifacts") -> None:
        self.bucket = bucket
        self.root = (root / bucket).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise InvalidKey(f"invalid artifact key {key!r}")
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + ".meta.json")

    def _save_stream(self, key: str, stream: IO[bytes], content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as sink:
                size, sha256 = _hash_into(stream, sink)
                sink.flush()
                os.fsync(sink.fileno())
            stored = StoredObject(self.bucket, key, size, sha256, content_type, datetime.now(UTC))
            meta_tmp = self._meta_path(Path(tmp_name))
            meta_tmp.write_text(json.dumps(stored.to_json()))
            os.replace(tmp_name, path)
            os.replace(meta_tmp, self._meta_path(path))
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            self._meta_path(Path(tmp_name)).unlink(missing_ok=True)
            raise
        return stored

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        handle = self.open(key)
        handle.seek(start)
        return cast(BinaryIO, io.BufferedReader(_Window(handle, end - start + 1), CHUNK))

    def stat(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            meta = json.loads(self._meta_path(path).read_text())
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None
        meta["created_at"] = datetime.fromisoformat(meta["created_at"])
        return StoredObject(**meta)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._meta_path(path).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        found = []
        for path in folder.rglob("*"):
            # Metadata twins and temporary files of writes in progress are not objects.
            name = path.name
            if (
                path.is_file()
                and not name.endswith(".meta.json")
                and not name.startswith(".upload-")
            ):
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def download_url(self, key: str, expires_in: int) -> str:
        from django.core import signing
        from django.urls import reverse

        self.stat(key)
        token = signing.dumps({"b": self.bucket, "k": key, "ttl": expires_in}, salt=_URL_SALT)
        return reverse("storage-download", kwargs={"token": token})

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                pass
        except OSError as error:
            raise StorageUnavailable(
                f"artifact folder {self.root} is not writable: {error}"
            ) from error


_URL_SALT = "myspinbot.storage.download"


def resolve_download_token(token: str) -> tuple[LocalArtifactStore, str]:
    """The local store and key a ``download_url`` token names, if it has not expired."""
    from django.core import signing

    unsigned = signing.loads(token, salt=_URL_SALT, max_age=None)
    data = signing.loads(token, salt=_URL_SALT, max_age=int(unsigned["ttl"]))
    store = get_artifact_store()
    if not isinstance(store, LocalArtifactStore) or data["b"] != store.bucket:
        raise signing.BadSignature("token is not for this store")
    return store, str(data["k"])


class S3ArtifactStore(ArtifactStore):
    """Objects in an S3 bucket (MinIO, SeaweedFS or AWS) through boto3.

    sha256 is computed while uploading and kept as object metadata; a single
    PUT (or a completed multipart upload) is atomic on the server.

    Download links are signed by a second client: for the host browsers reach
    (``public_endpoint_url``) and with the signing identity (read-only in production), so a
    link never carries the storage's root access key or an internal host name.
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        timeout: float,
        public_endpoint_url: str | None = None,
        signing_access_key_id: str = "",
        signing_secret_access_key: str = "",
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        )

        def client(endpoint: str | None, key: str, secret: str) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=key or None,
                aws_secret_access_key=secret or None,
                config=config,
            )

        self.client = client(endpoint_url, access_key_id, secret_access_key)
        signing_key = signing_access_key_id or access_key_id
        signing_secret = signing_secret_access_key if signing_access_key_id else secret_access_key
        public = public_endpoint_url or endpoint_url
        same = (public, signing_key) == (endpoint_url, access_key_id)
        self.signer = self.client if same else client(public, signing_key, signing_secret)

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"} and key is not None:
                raise ArtifactNotFound(key) from None
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "RequestTimeout"}:
                raise StorageUnavailable(f"S3 {code}: {error}") from error
            raise StorageError(f"S3 {code}: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 endpoint unreachable: {error}") from error

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (set-up and tests)."""
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.bucket)

    def _save_stream(self, key: str, stream: IO[bytes], content_type: str) -> StoredObject:
        # Hash first into a spooled copy: S3 needs the sha256 in the metadata at PUT time.
        with tempfile.SpooledTemporaryFile(max_size=CHUNK * 8) as spool:
            size, sha256 = _hash_into(stream, spool)
            spool.seek(0)
            with self._errors(key):
                self.client.upload_fileobj(
                    spool,
                    self.bucket,
                    key,
                    ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": sha256}},
                )
        return StoredObject(self.bucket, key, size, sha256, content_type, datetime.now(UTC))

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        with self._errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        return cast(BinaryIO, response["Body"])

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        check_key(key)
        with self._errors(key):
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}"
            )
        return cast(BinaryIO, response["Body"])

    def stat(self, key: str) -> StoredObject:
        check_key(key)
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return StoredObject(
            bucket=self.bucket,
            key=key,
            size_bytes=int(head["ContentLength"]),
            sha256=str(head.get("Metadata", {}).get("sha256", "")),
            content_type=str(head.get("ContentType", "application/octet-stream")),
            created_at=head["LastModified"],
        )

    def delete(self, key: str) -> None:
        check_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str) -> list[str]:
        check_key(prefix.rstrip("/"))
        found: list[str] = []
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                found.extend(str(item["Key"]) for item in page.get("Contents", []))
        return sorted(found)

    def download_url(self, key: str, expires_in: int) -> str:
        self.stat(key)
        with self._errors(key):
            url: str = self.signer.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
            )
        return url

    def check(self) -> None:
        with self._errors():
            self.client.head_bucket(Bucket=self.bucket)


@functools.cache
def get_artifact_store() -> ArtifactStore:
    """The process-wide store chosen by settings (S3 when a bucket is configured)."""
    from django.conf import settings

    if settings.S3_BUCKET:
        return S3ArtifactStore(
            bucket=settings.S3_BUCKET,
            endpoint_url=settings.S3_ENDPOINT_URL,
            region=settings.S3_REGION,
            access_key_id=settings.S3_ACCESS_KEY_ID,
            secret_access_key=settings.S3_SECRET_ACCESS_KEY,
            timeout=settings.S3_TIMEOUT_SECONDS,
            public_endpoint_url=settings.S3_PUBLIC_ENDPOINT_URL,
            signing_access_key_id=settings.S3_SIGNING_ACCESS_KEY_ID,
            signing_secret_access_key=settings.S3_SIGNING_SECRET_ACCESS_KEY,
        )
    return LocalArtifactStore(Path(settings.ARTIFACT_ROOT))
