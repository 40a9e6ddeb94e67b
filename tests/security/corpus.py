"""Reading ``tests/corpus/*.jsonl`` and turning an entry into a real request.

An entry is one JSON object per line::

    {"id": "jobs/graph-self-loop", "method": "POST", "path": "/api/jobs",
     "json": {...} | "raw": "..." | "raw_b64": "..." , "content_type": "...",
     "files": {"field": {"name": "x.png", "type": "image/png", "data": <payload>}},
     "fields": {"data": "..."}, "extra_fields": {...},
     "expect": {"status": 422, "code": "invalid_graph"}}

(or ``"expect": {"status": 201, "mapped": [node ids]}`` for an original-system document
that must be accepted with those ids mapped to storage-safe keys)

Big values are written as small generators so the files stay readable:
``{"$repeat": "x", "times": N}`` (a string), ``{"$repeat_list": v, "times": N}``,
``{"$nest": "list"|"dict", "depth": N}``, ``{"$chain": N, "cycle": bool, "edges": bool}``
(a graph of N ``debug.noop`` nodes), ``{"$edges": N}`` (a graph with N edges) and, for
raw bodies, ``{"$raw_nest": "[", "close": "]", "depth": N}``. Upload payloads are
``{"text"}``, ``{"b64"}``, ``{"media": "png"|"jpeg"|"wav"|"gif"|"bmp"|"tiff"}``,
``{"png_header": [w, h]}`` (a valid PNG header claiming that size),
``{"png_bomb": [w, h]}`` (a real zlib-compressed all-black PNG), ``{"jpeg_header"}``,
``{"webp_header"}``, ``{"flac_silence": seconds, "declared": bool}`` (8 kHz mono FLAC;
undeclared: no length in its header), ``{"wav_codec": "adpcm_ms"}`` (a WAV whose
samples use that codec), ``{"zip": n}``/``{"gzip": n}`` (n zero bytes compressed),
``{"pad": p, "to": n}``, ``{"truncate": p, "keep": n or fraction}``,
``{"flip": p, "at": i}`` and ``{"concat": [p, ...]}``.

Path placeholders: ``{own_job}``, ``{own_artifact}`` (the caller's), ``{bob_job}``,
``{bob_artifact}`` (another user's) and ``{random}`` (an id nobody has); they are also
replaced inside JSON strings.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from django.test import Client

from tests.support.media import flac_silence, jpeg_bytes, png_bytes, wav_bytes, wav_with_codec

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
BOUNDARY = "CorpusBoundary7MA4YWxkTrZu0gW"


def load_corpus() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                entry = json.loads(line)
                entry["_where"] = f"{path.name}:{number}"
                entries.append(entry)
    return entries


# --- JSON values ---------------------------------------------------------------------


def expand(value: Any, names: dict[str, str]) -> Any:
    """``value`` with generators expanded and placeholders filled in."""
    if isinstance(value, dict):
        if "$repeat" in value:
            return str(value["$repeat"]) * int(value["times"])
        if "$repeat_list" in value:
            return [expand(value["$repeat_list"], names)] * int(value["times"])
        if "$nest" in value:
            nested: Any = "leaf"
            for _ in range(int(value["depth"]) - 1):
                nested = [nested] if value["$nest"] == "list" else {"k": nested}
            return nested
        if "$chain" in value:
            count = int(value["$chain"])
            nodes = [{"id": f"n{i}", "service": "debug.noop"} for i in range(count)]
            edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(count - 1)]
            if value.get("cycle"):
                edges.append({"from": f"n{count - 1}", "to": "n0"})
            if value.get("edges") is False:
                edges = []
            return {"schema": "langgraph.v1", "nodes": nodes, "edges": edges}
        if "$edges" in value:
            count = int(value["$edges"])
            nodes = [{"id": "a", "service": "debug.noop"}, {"id": "b", "service": "debug.noop"}]
            edges = [{"from": "a", "to": "b"}] * count
            return {"schema": "langgraph.v1", "nodes": nodes, "edges": edges}
        return {key: expand(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item, names) for item in value]
    if isinstance(value, str):
        return fill(value, names)
    return value


def fill(text: str, names: dict[str, str]) -> str:
    for name, replacement in names.items():
        text = text.replace("{" + name + "}", replacement)
    return text


def raw_body(value: Any) -> bytes:
    if isinstance(value, dict) and "$raw_nest" in value:
        depth = int(value["depth"])
        return (str(value["$raw_nest"]) * depth + str(value["close"]) * depth).encode()
    return str(value).encode("utf-8")


# --- Upload payloads ---------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A well-formed PNG (8-bit greyscale) claiming ``width`` x ``height``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = idat or zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int) -> bytes:
    """An all-black greyscale PNG of that size, compressed row by row (~1000:1)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    return png_header(width, height, b"".join(parts))


def jpeg_header(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_header(width: int, height: int) -> bytes:
    """A lossless-WebP header claiming ``width`` x ``height`` with no image data."""
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits)
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _pillow(kind: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format=kind.upper())
    return buffer.getvalue()


def payload(spec: dict[str, Any]) -> bytes:
    """The bytes an upload payload spec describes."""
    if "text" in spec:
        return str(spec["text"]).encode("utf-8")
    if "b64" in spec:
        return base64.b64decode(spec["b64"])
    if "media" in spec:
        kind = spec["media"]
        if kind == "png":
            return png_bytes(*spec.get("size", [8, 8]))
        if kind == "jpeg":
            return jpeg_bytes()
        if kind == "wav":
            return wav_bytes()
        return _pillow(kind)
    if "png_header" in spec:
        return png_header(*spec["png_header"])
    if "png_bomb" in spec:
        return png_bomb(*spec["png_bomb"])
    if "jpeg_header" in spec:
        return jpeg_header(*spec["jpeg_header"])
    if "webp_header" in spec:
        return webp_header(*spec["webp_header"])
    if "flac_silence" in spec:
        return flac_silence(float(spec["flac_silence"]), declared=spec.get("declared", True))
    if "wav_codec" in spec:
        return wav_with_codec(str(spec["wav_codec"]))
    if "zip" in spec:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("inner.png", b"\x00" * int(spec["zip"]))
        return buffer.getvalue()
    if "gzip" in spec:
        return gzip.compress(b"\x00" * int(spec["gzip"]), compresslevel=9)
    if "pad" in spec:
        head = payload(spec["pad"])
        return head + b"\x00" * (int(spec["to"]) - len(head))
    if "truncate" in spec:
        whole = payload(spec["truncate"])
        keep = spec["keep"]
        return whole[: int(len(whole) * keep) if isinstance(keep, float) else int(keep)]
    if "flip" in spec:
        data = bytearray(payload(spec["flip"]))
        data[int(spec["at"])] ^= 0xFF
        return bytes(data)
    if "concat" in spec:
        return b"".join(payload(part) for part in spec["concat"])
    raise ValueError(f"unknown payload spec {sorted(spec)}")


def multipart(fields: dict[str, str], files: list[tuple[str, dict[str, Any]]]) -> bytes:
    """A multipart/form-data body, file names sent exactly as the entry has them
    (Django's test client would strip folders from them)."""
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8", "surrogatepass") + b"\r\n")
    for name, spec in files:
        filename = spec["name"].replace('"', "%22")
        out.write(
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {spec['type']}\r\n\r\n".encode("utf-8", "surrogatepass")
        )
        out.write(payload(spec["data"]) + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def send(client: Client, entry: dict[str, Any], names: dict[str, str]) -> Any:
    """Send the entry's request with ``client``; returns the response."""
    method = entry["method"].lower()
    path = fill(entry["path"], names)
    if "json" in entry:
        body = json.dumps(expand(entry["json"], names)).encode()
        content_type = entry.get("content_type", "application/json")
    elif "raw" in entry:
        body = raw_body(entry["raw"])
        content_type = entry["content_type"]
    elif "raw_b64" in entry:
        body = base64.b64decode(entry["raw_b64"])
        content_type = entry["content_type"]
    elif "files" in entry or "fields" in entry:
        fields = {**entry.get("fields", {}), **entry.get("extra_fields", {})}
        files = [
            (name, one)
            for name, spec in entry.get("files", {}).items()
            for one in (spec if isinstance(spec, list) else [spec])
        ]
        body = multipart({k: expand(v, names) for k, v in fields.items()}, files)
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    else:
        return getattr(client, method)(path)
    return client.generic(method.upper(), path, body, content_type=content_type)
