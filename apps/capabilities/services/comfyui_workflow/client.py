"""A client for a ComfyUI server's HTTP and WebSocket API (standard library + websockets).

HTTP: ``GET /object_info``, ``GET /prompt`` (queue length), ``POST /prompt``,
``POST /interrupt``, ``POST /queue`` (delete), ``GET /history/{id}``, ``GET /view``,
``POST /upload/image``. WebSocket ``/ws?clientId=``: JSON messages ``{type, data}`` and
binary frames (``>I`` event type, then for a preview ``>I`` image format and the image).

Failures are typed by whether a retry could help: a server that refuses the connection,
answers 5xx, times out or closes the socket mid-run → ``TransientError("comfyui_unavailable")``;
a refused prompt → :func:`prompt_error` (permanent, with the server's message).
"""

from __future__ import annotations

import json
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from myspinbot.errors import PermanentError, ServiceError, TransientError

PREVIEW_IMAGE = 1
PREVIEW_FORMATS = {1: ("jpg", "image/jpeg"), 2: ("png", "image/png")}
_MAX_MESSAGE_CHARS = 2000
# A loader input whose value is a file the server lacks names a model (ckpt_name,
# lora_name, vae_name, unet_name, clip_name, control_net_name, model_name...).
_MODEL_FIELD = re.compile(
    r"(^|_)(ckpt|lora|vae|unet|clip|control_net|model|upscale_model|style_model|gligen)(_name)?$"
)


def unavailable(url: str, why: object) -> TransientError:
    return TransientError(
        "comfyui_unavailable",
        f"ComfyUI server {url} is unavailable: {why}",
        details={"server": url},
    )


@dataclass(frozen=True)
class Server:
    """One ComfyUI server; ``timeout`` bounds every HTTP request (seconds)."""

    url: str
    timeout: float

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise unavailable(self.url, f"HTTP {error.code}") from None
            raise
        except (urllib.error.URLError, OSError) as error:
            raise unavailable(self.url, getattr(error, "reason", error)) from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def post_json(self, path: str, value: Any) -> Any:
        data = self._request("POST", path, json.dumps(value).encode())
        return json.loads(data) if data.strip() else None

    def queue_length(self) -> int:
        """Prompts running and waiting (``GET /prompt``)."""
        return int(self.get_json("/prompt")["exec_info"]["queue_remaining"])

    def node_classes(self) -> set[str]:
        """The node classes the server has (``GET /object_info``)."""
        return set(self.get_json("/object_info"))

    def upload(self, filename: str, data: bytes, content_type: str) -> str:
        """Store an input file (``POST /upload/image``, which takes any input file) and
        return the value a loader node's input takes: ``subfolder/name`` or ``name``."""
        boundary = uuid.uuid4().hex
        parts = [
            _form_part(boundary, "image", data, filename=filename, content_type=content_type),
            _form_part(boundary, "overwrite", b"true"),
            _form_part(boundary, "type", b"input"),
            f"--{boundary}--\r\n".encode(),
        ]
        answer = json.loads(
            self._request(
                "POST",
                "/upload/image",
                b"".join(parts),
                f"multipart/form-data; boundary={boundary}",
            )
        )
        return (
            f"{answer['subfolder']}/{answer['name']}"
            if answer.get("subfolder")
            else str(answer["name"])
        )

    def queue_prompt(self, workflow: dict[str, Any], client_id: str, prompt_id: str) -> None:
        """``POST /prompt``; raises :func:`prompt_error` when the server refuses it."""
        try:
            self.post_json(
                "/prompt", {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
            )
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                answer = json.loads(body)
            except ValueError:
                answer = {"error": {"type": "http", "message": body.decode(errors="replace")}}
            raise prompt_error(self.url, answer) from None

    def cancel(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` whether it runs (interrupt) or waits (queue delete)."""
        self.post_json("/interrupt", {"prompt_id": prompt_id})
        self.post_json("/queue", {"delete": [prompt_id]})

    def history(self, prompt_id: str) -> dict[str, Any]:
        """The prompt's history entry (``{}`` while the server has none)."""
        entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
        return dict(entry.get(prompt_id, {}))

    def view(self, file: dict[str, Any]) -> bytes:
        """An output file (``GET /view``) given as ``{filename, subfolder, type}``."""
        query = urllib.parse.urlencode(
            {k: file.get(k, "") for k in ("filename", "subfolder", "type")}
        )
        return self._request("GET", f"/view?{query}")


def _form_part(
    boundary: str,
    name: str,
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


@dataclass(frozen=True)
class Message:
    """One WebSocket message: a JSON ``{type, data}``, or a preview image (``type``
    ``"preview"``, ``data`` empty, ``image`` and its extension and content type), or
    ``"idle"`` when nothing arrived within the wait."""

    type: str
    data: dict[str, Any]
    image: bytes = b""
    extension: str = ""
    content_type: str = ""


class Socket:
    """The server's WebSocket for one client id, as a context manager (connected on
    entry, closed on exit); ``receive`` waits at most ``wait`` seconds."""

    def __init__(self, url: str, client_id: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.url, self.timeout = url, timeout
        self.address = urllib.parse.urlunsplit(
            (scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={client_id}", "")
        )
        self._connection: ClientConnection | None = None

    def __enter__(self) -> Socket:
        try:
            connection = connect(self.address, open_timeout=self.timeout, max_size=2**26)
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise unavailable(self.url, error) from None
        self._connection = connection.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._connection is not None
        self._connection.close()

    def receive(self, wait: float) -> Message:
        assert self._connection is not None, "use the socket in a with block"
        try:
            frame = self._connection.recv(timeout=wait)
        except TimeoutError:
            return Message("idle", {})
        except ConnectionClosed as error:
            raise unavailable(self.url, f"the connection closed mid-run ({error})") from None
        if isinstance(frame, str):
            message = json.loads(frame)
            return Message(str(message.get("type")), dict(message.get("data") or {}))
        if len(frame) >= 8 and struct.unpack(">I", frame[:4])[0] == PREVIEW_IMAGE:
            extension, content_type = PREVIEW_FORMATS.get(
                struct.unpack(">I", frame[4:8])[0], ("bin", "application/octet-stream")
            )
            return Message("preview", {}, bytes(frame[8:]), extension, content_type)
        return Message("binary", {})


def prompt_error(url: str, answer: dict[str, Any]) -> ServiceError:
    """Our error for a prompt the server refused (``POST /prompt`` 400).

    An unknown node class → ``comfyui_missing_node``; a loader's file name not in the
    server's list → ``comfyui_missing_model``; anything else → ``comfyui_invalid_workflow``.
    """
    error = answer.get("error") or {}
    error = error if isinstance(error, dict) else {"message": str(error)}
    node_errors = answer.get("node_errors") or {}
    message = str(error.get("message", "the prompt was refused"))
    details: dict[str, Any] = {"server": url, "type": error.get("type"), "node_errors": node_errors}
    if error.get("type") == "missing_node_type" or "does not exist" in message:
        extra = error.get("extra_info") or {}
        details["class_type"] = extra.get("class_type")
        return PermanentError("comfyui_missing_node", _clip(f"ComfyUI: {message}"), details=details)
    problems = []
    for node_id, found in node_errors.items():
        for problem in found.get("errors", []):
            field = str((problem.get("extra_info") or {}).get("input_name", ""))
            problems.append((str(node_id), found.get("class_type"), field, problem))
    for node_id, class_type, field, problem in problems:
        if problem.get("type") == "value_not_in_list" and _MODEL_FIELD.search(field):
            return PermanentError(
                "comfyui_missing_model",
                _clip(
                    f"ComfyUI node #{node_id} ({class_type}): "
                    f"{problem.get('details') or problem.get('message')}"
                ),
                details=details,
            )
    if problems:
        node_id, class_type, _, problem = problems[0]
        message = (
            f"{message}: node #{node_id} ({class_type}): "
            f"{problem.get('message')}: {problem.get('details')}"
        )
    return PermanentError("comfyui_invalid_workflow", _clip(f"ComfyUI: {message}"), details=details)


def execution_error(url: str, data: dict[str, Any]) -> ServiceError:
    """Our error for an ``execution_error`` message: out of memory → ``out_of_memory``;
    a file not found (a model the node loads) → ``comfyui_missing_model``; else
    ``comfyui_execution_error``; each with the node and the server's message."""
    exception_type = str(data.get("exception_type", ""))
    text = str(data.get("exception_message", "")).strip()
    where = f"ComfyUI node #{data.get('node_id')} ({data.get('node_type')})"
    details = {
        "server": url,
        "node_id": data.get("node_id"),
        "node_type": data.get("node_type"),
        "exception_type": exception_type,
    }
    if "OutOfMemory" in exception_type or "out of memory" in text.lower():
        return PermanentError(
            "out_of_memory", _clip(f"{where} ran out of memory: {text}"), details=details
        )
    if exception_type.endswith("FileNotFoundError") or re.search(
        r"\bmodel\b.*\bnot found\b", text, re.IGNORECASE
    ):
        return PermanentError("comfyui_missing_model", _clip(f"{where}: {text}"), details=details)
    return PermanentError(
        "comfyui_execution_error",
        _clip(f"{where} failed: {exception_type}: {text}"),
        details=details,
    )


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
