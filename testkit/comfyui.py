"""A stand-in ComfyUI server: ComfyUI's HTTP and WebSocket API on loopback, executing a
fake node graph, written from ComfyUI's documented protocol.

    server = FakeComfyUI()
    server.start()               # server.url is http://127.0.0.1:<port>
    server.fail("KSampler", "torch.OutOfMemoryError", "Allocation on device ...")
    server.crash_after_steps = 3 # the process "dies" (sockets close, queue lost) mid-run
    server.stop(); server.start()  # a restart on the same port, with nothing remembered

Routes: ``GET /object_info`` (and ``/object_info/{class}``), ``POST /prompt`` (validation
errors as ComfyUI reports them: an unknown class is ``missing_node_type``, a file name not
in a loader's list is ``value_not_in_list``), ``GET /prompt`` (queue length), ``GET`` and
``POST /queue`` (``{"delete": [...]}``, ``{"clear": true}``), ``POST /interrupt``,
``GET /history/{prompt_id}``, ``GET /view``, ``POST /upload/image`` and ``/ws?clientId=``.

Running a prompt sends, to the client that queued it, ``execution_start``,
``execution_cached`` (the nodes whose inputs are unchanged since an earlier prompt),
``executing`` per node, ``progress`` per step with a binary preview frame after each
(``>II`` event 1 + format 2 (PNG), then the image), ``executed`` for output nodes, and
then ``execution_success``, ``execution_error`` or ``execution_interrupted``, and last
``executing`` with ``node: null``. ``status`` messages (queue length) go to everyone.

The node classes are small fakes: a checkpoint loader with a list of model files, text
encoding, an empty latent, a sampler with ``steps`` progress steps, decoding (a PNG of the
latent's size in a colour from the seed), image and audio loaders reading uploads, and
``SaveImage``/``SaveAudio`` writing output files.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from PIL import Image

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREVIEW_IMAGE = 1  # binary event type of an encoded preview
PNG_FORMAT = 2


@dataclass(frozen=True)
class NodeClass:
    """A node class as ``/object_info`` describes it; ``kind`` picks what running it does."""

    name: str
    required: dict[str, Any]
    output: tuple[str, ...] = ()
    output_node: bool = False
    kind: str = "pass"

    def info(self) -> dict[str, Any]:
        return {
            "input": {"required": self.required},
            "input_order": {"required": list(self.required)},
            "output": list(self.output),
            "output_is_list": [False] * len(self.output),
            "output_name": list(self.output),
            "name": self.name,
            "display_name": self.name,
            "description": "",
            "category": "stand-in",
            "output_node": self.output_node,
        }


def default_classes(models: list[str]) -> dict[str, NodeClass]:
    """The fake node classes; ``models`` are the checkpoint files the loader lists."""
    classes = [
        NodeClass("CheckpointLoaderSimple", {"ckpt_name": [models]}, ("MODEL", "CLIP", "VAE")),
        NodeClass(
            "CLIPTextEncode",
            {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]},
            ("CONDITIONING",),
        ),
        NodeClass(
            "EmptyLatentImage",
            {
                "width": ["INT", {"default": 512}],
                "height": ["INT", {"default": 512}],
                "batch_size": ["INT", {"default": 1}],
            },
            ("LATENT",),
            kind="latent",
        ),
        NodeClass(
            "KSampler",
            {
                "model": ["MODEL"],
                "seed": ["INT", {"default": 0}],
                "steps": ["INT", {"default": 20}],
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
                "latent_image": ["LATENT"],
            },
            ("LATENT",),
            kind="sample",
        ),
        NodeClass("VAEDecode", {"samples": ["LATENT"], "vae": ["VAE"]}, ("IMAGE",), kind="decode"),
        NodeClass("LoadImage", {"image": [[]]}, ("IMAGE", "MASK"), kind="load_image"),
        NodeClass("LoadAudio", {"audio": [[]]}, ("AUDIO",), kind="load_audio"),
        NodeClass(
            "SaveImage",
            {"images": ["IMAGE"], "filename_prefix": ["STRING"]},
            (),
            True,
            "save_image",
        ),
        NodeClass(
            "SaveAudio", {"audio": ["AUDIO"], "filename_prefix": ["STRING"]}, (), True, "save_audio"
        ),
    ]
    return {c.name: c for c in classes}


@dataclass(frozen=True)
class Failure:
    """What a node class raises when it runs (ComfyUI's ``exception_type`` and message)."""

    exception_type: str
    message: str


@dataclass
class QueuedPrompt:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    client_id: str | None

    def row(self) -> list[Any]:
        outputs = [i for i, n in self.prompt.items() if _is_output(n)]
        return [self.number, self.prompt_id, self.prompt, {"client_id": self.client_id}, outputs]


def _is_output(node: dict[str, Any]) -> bool:
    return str(node.get("class_type")) in ("SaveImage", "SaveAudio")


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


class Interrupted(Exception):
    pass


class NodeFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class FakeComfyUI:
    """The server. ``step_seconds`` is how long each sampler step takes."""

    folder: Path | None = None
    models: list[str] = field(default_factory=lambda: ["tiny-sd.safetensors"])
    step_seconds: float = 0.01
    # After this many sampler steps (counted over the server's life) the server dies.
    crash_after_steps: int | None = None
    classes: dict[str, NodeClass] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    # What arrived, for assertions: (method, path) per request and each POST /prompt body.
    requests: list[tuple[str, str]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    interrupts: int = 0

    def __post_init__(self) -> None:
        if self.folder is None:
            import tempfile

            self.folder = Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        if not self.classes:
            self.classes = default_classes(self.models)
        self.port = _free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._reset()

    # --- control -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on :attr:`port` (the same one after a restart) until :meth:`stop`."""
        self._reset()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            ws="websockets-sansio",
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in ComfyUI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop at once, as a killed process would: open sockets close, the queue is lost."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def fail(self, class_type: str, exception_type: str, message: str) -> None:
        """Make every node of ``class_type`` raise when it runs."""
        self.failures[class_type] = Failure(exception_type, message)

    def remove_class(self, class_type: str) -> None:
        """Forget a node class, as a server without that custom node would not know it."""
        self.classes.pop(class_type)

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self._history.get(prompt_id)

    # --- state -----------------------------------------------------------------------

    def _reset(self) -> None:
        # What a ComfyUI process keeps in memory; a restart forgets it (files stay).
        self._pending: list[QueuedPrompt] = []
        self._running: QueuedPrompt | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, tuple[str, Any, dict[str, Any] | None]] = {}
        self._sockets: dict[str, asyncio.Queue[str | bytes]] = {}
        self._interrupt = False
        self._number = 0
        self._steps_done = 0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    def _dir(self, kind: str) -> Path:
        assert self.folder is not None
        path = self.folder / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- ASGI ------------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        path = scope["path"]
        self.requests.append((scope.get("method", "WS"), path))
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, payload, content_type = self._route(scope["method"], path, query, headers, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, str]:
        js = "application/json"
        if method == "GET" and path == "/object_info":
            return 200, {name: c.info() for name, c in self.classes.items()}, js
        if method == "GET" and path.startswith("/object_info/"):
            wanted = self.classes.get(path.removeprefix("/object_info/"))
            return 200, ({wanted.name: wanted.info()} if wanted else {}), js
        if method == "GET" and path == "/prompt":
            return 200, {"exec_info": {"queue_remaining": self._queue_remaining()}}, js
        if method == "POST" and path == "/prompt":
            status, answer = self._queue_prompt(json.loads(body or b"{}"))
            return status, answer, js
        if method == "GET" and path == "/queue":
            running = [self._running.row()] if self._running else []
            return (
                200,
                {"queue_running": running, "queue_pending": [p.row() for p in self._pending]},
                js,
            )
        if method == "POST" and path == "/queue":
            request = json.loads(body or b"{}")
            if request.get("clear"):
                self._pending.clear()
            gone = set(request.get("delete", []))
            self._pending = [p for p in self._pending if p.prompt_id not in gone]
            self._broadcast_status()
            return 200, {}, js
        if method == "POST" and path == "/interrupt":
            request = json.loads(body or b"{}")
            wanted = request.get("prompt_id")
            self.interrupts += 1
            if self._running and wanted in (None, self._running.prompt_id):
                self._interrupt = True
            return 200, {}, js
        if method == "GET" and path == "/history":
            return 200, self._history, js
        if method == "GET" and path.startswith("/history/"):
            prompt_id = path.removeprefix("/history/")
            found = self._history.get(prompt_id)
            return 200, ({prompt_id: found} if found else {}), js
        if method == "GET" and path == "/view":
            return self._view(query)
        if method == "POST" and path == "/upload/image":
            return self._upload(headers.get("content-type", ""), body)
        return 404, b"404: Not Found", "text/plain"

    def _view(self, query: dict[str, str]) -> tuple[int, Any, str]:
        kind = query.get("type", "output")
        if kind not in ("output", "input", "temp") or "filename" not in query:
            return 400, b"bad request", "text/plain"
        base = self._dir(kind).resolve()
        path = (base / query.get("subfolder", "") / query["filename"]).resolve()
        if not path.is_relative_to(base):
            return 403, b"forbidden", "text/plain"
        if not path.is_file():
            return 404, b"404: Not Found", "text/plain"
        return 200, path.read_bytes(), "application/octet-stream"

    def _upload(self, content_type: str, body: bytes) -> tuple[int, Any, str]:
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (
                part.get_filename(),
                payload if isinstance(payload, bytes) else b"",
            )
        if "image" not in fields or not fields["image"][0]:
            return 400, b"no image", "text/plain"
        filename = Path(str(fields["image"][0])).name
        subfolder = fields.get("subfolder", (None, b""))[1].decode()
        kind = fields.get("type", (None, b"input"))[1].decode() or "input"
        folder = self._dir(kind) / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(fields["image"][1])
        return 200, {"name": filename, "subfolder": subfolder, "type": kind}, "application/json"

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        client_id = query.get("clientId") or uuid.uuid4().hex
        outbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._sockets[client_id] = outbox
        outbox.put_nowait(json.dumps(self._status_message(client_id)))
        closed = asyncio.ensure_future(receive())
        try:
            while True:
                item = asyncio.ensure_future(outbox.get())
                done, _ = await asyncio.wait({item, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    item.cancel()
                    return
                data = item.result()
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        finally:
            if self._sockets.get(client_id) is outbox:
                del self._sockets[client_id]

    # --- the queue -------------------------------------------------------------------

    def _queue_remaining(self) -> int:
        return len(self._pending) + (1 if self._running else 0)

    def _status_message(self, sid: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": {"exec_info": {"queue_remaining": self._queue_remaining()}}
        }
        if sid:
            data["sid"] = sid
        return {"type": "status", "data": data}

    def _broadcast_status(self) -> None:
        text = json.dumps(self._status_message())
        for outbox in self._sockets.values():
            outbox.put_nowait(text)

    def _send(self, client_id: str | None, kind: str, data: dict[str, Any] | bytes) -> None:
        outbox = self._sockets.get(client_id or "")
        if outbox is None:
            return
        outbox.put_nowait(
            data if isinstance(data, bytes) else json.dumps({"type": kind, "data": data})
        )

    def _queue_prompt(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.prompts.append(request)
        prompt = request.get("prompt")
        if not isinstance(prompt, dict) or not prompt:
            error = {
                "type": "invalid_prompt",
                "message": "Cannot execute because the prompt is empty",
                "details": "",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        for node_id, node in prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type not in self.classes:
                error = {
                    "type": "missing_node_type",
                    "message": (
                        f"Node '{class_type}' not found. The custom node may not be installed."
                    ),
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {
                        "node_id": node_id,
                        "class_type": class_type,
                        "node_title": class_type,
                    },
                }
                return 400, {"error": error, "node_errors": {}}
        node_errors = self._validate(prompt)
        if node_errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": node_errors}
        self._number += 1
        prompt_id = str(request.get("prompt_id") or uuid.uuid4())
        self._pending.append(
            QueuedPrompt(self._number, prompt_id, prompt, request.get("client_id"))
        )
        self._broadcast_status()
        assert self._wake is not None
        self._wake.set()
        return 200, {"prompt_id": prompt_id, "number": self._number, "node_errors": {}}

    def _validate(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """ComfyUI's per-node errors: missing inputs, links to unknown nodes, list values."""
        found: dict[str, Any] = {}
        for node_id, node in prompt.items():
            node_class = self.classes[node["class_type"]]
            inputs = node.get("inputs", {})
            errors = []
            for name, spec in node_class.required.items():
                value = inputs.get(name)
                if value is None:
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                elif _is_link(value) and str(value[0]) not in prompt:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                elif isinstance(spec[0], list) and not _is_link(value):
                    choices = spec[0] or self._files(name)
                    if value not in choices:
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: '{value}' not in {choices}",
                                "extra_info": {
                                    "input_name": name,
                                    "received_value": value,
                                    "input_config": [choices],
                                },
                            }
                        )
            if errors:
                found[node_id] = {
                    "errors": errors,
                    "dependent_outputs": [],
                    "class_type": node_class.name,
                }
        return found

    def _files(self, name: str) -> list[str]:
        base = self._dir("input")
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                self._running = self._pending.pop(0)
                self._interrupt = False
                try:
                    await self._execute(self._running)
                finally:
                    self._send(
                        self._running.client_id,
                        "executing",
                        {"node": None, "prompt_id": self._running.prompt_id},
                    )
                    self._running = None
                    self._broadcast_status()

    async def _execute(self, queued: QueuedPrompt) -> None:
        prompt, prompt_id, client = queued.prompt, queued.prompt_id, queued.client_id
        order = _order(prompt)
        keys = {node_id: _cache_key(prompt, node_id) for node_id in order}
        cached = [n for n in order if self._cache.get(n, ("",))[0] == keys[n]]
        messages: list[list[Any]] = []

        def tell(kind: str, data: dict[str, Any]) -> None:
            messages.append([kind, data])
            self._send(client, kind, data)

        now = int(time.time() * 1000)
        tell("execution_start", {"prompt_id": prompt_id, "timestamp": now})
        tell("execution_cached", {"nodes": cached, "prompt_id": prompt_id, "timestamp": now})
        values: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []

        def done(node_id: str, ui: Any) -> None:
            """A node ran (or was cached): its UI output, if any, is sent as ``executed``."""
            executed.append(node_id)
            if ui is not None:
                outputs[node_id] = ui
                event = {"node": node_id, "display_node": node_id, "output": ui}
                self._send(client, "executed", {**event, "prompt_id": prompt_id})

        for node_id in order:
            node = prompt[node_id]
            if node_id in cached:
                _, values[node_id], ui = self._cache[node_id]
                done(node_id, ui)
                continue
            self._send(
                client,
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
            )
            inputs = {
                name: values[str(value[0])] if _is_link(value) else value
                for name, value in node.get("inputs", {}).items()
            }
            try:
                value, ui = await self._run_node(
                    node_id, self.classes[node["class_type"]], inputs, prompt_id, client
                )
            except Interrupted:
                tell(
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "timestamp": _ms(),
                    },
                )
                self._finish(queued, outputs, "error", messages)
                return
            except NodeFailed as failed:
                tell(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": failed.failure.message,
                        "exception_type": failed.failure.exception_type,
                        "traceback": [f'  File "nodes.py", line 1, in {node["class_type"]}\n'],
                        "current_inputs": {},
                        "current_outputs": {},
                        "timestamp": _ms(),
                    },
                )
                self._finish(queued, outputs, "error", messages)
                return
            values[node_id] = value
            self._cache[node_id] = (keys[node_id], value, ui)
            done(node_id, ui)
        tell("execution_success", {"prompt_id": prompt_id, "timestamp": _ms()})
        self._finish(queued, outputs, "success", messages)

    def _finish(
        self, queued: QueuedPrompt, outputs: dict[str, Any], status: str, messages: list[list[Any]]
    ) -> None:
        self._history[queued.prompt_id] = {
            "prompt": queued.row(),
            "outputs": outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {},
        }

    async def _run_node(
        self,
        node_id: str,
        node_class: NodeClass,
        inputs: dict[str, Any],
        prompt_id: str,
        client: str | None,
    ) -> tuple[Any, dict[str, Any] | None]:
        if node_class.name in self.failures:
            raise NodeFailed(self.failures[node_class.name])
        kind = node_class.kind
        if kind == "latent":
            return {"width": int(inputs["width"]), "height": int(inputs["height"]), "seed": 0}, None
        if kind == "sample":
            steps = int(inputs["steps"])
            latent = {**inputs["latent_image"], "seed": int(inputs["seed"])}
            for step in range(1, steps + 1):
                await asyncio.sleep(self.step_seconds)
                if self._interrupt:
                    raise Interrupted
                self._steps_done += 1
                if (
                    self.crash_after_steps is not None
                    and self._steps_done >= self.crash_after_steps
                ):
                    self._crash()
                    await asyncio.sleep(3600)
                self._send(
                    client,
                    "progress",
                    {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id},
                )
                preview = _png(_colour(latent["seed"] + step), 16, 16)
                self._send(client, "", struct.pack(">II", PREVIEW_IMAGE, PNG_FORMAT) + preview)
            return latent, None
        if kind == "decode":
            latent = inputs["samples"]
            return Image.new(
                "RGB", (latent["width"], latent["height"]), _colour(latent["seed"])
            ), None
        if kind == "load_image":
            with Image.open(self._dir("input") / inputs["image"]) as image:
                return image.convert("RGB"), None
        if kind == "load_audio":
            path = self._dir("input") / inputs["audio"]
            return (path.suffix, path.read_bytes()), None
        if kind == "save_image":
            name = f"{inputs['filename_prefix']}_{self._number:05d}_.png"
            buffer = io.BytesIO()
            inputs["images"].save(buffer, format="PNG")
            (self._dir("output") / name).write_bytes(buffer.getvalue())
            return None, {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
        if kind == "save_audio":
            suffix, data = inputs["audio"]
            name = f"{inputs['filename_prefix']}_{self._number:05d}_{suffix}"
            (self._dir("output") / name).write_bytes(data)
            return None, {"audio": [{"filename": name, "subfolder": "", "type": "output"}]}
        return dict(inputs), None

    def _crash(self) -> None:
        # A killed process: the listener and every connection go at once.
        assert self._server is not None
        self._server.should_exit = True
        self._server.force_exit = True
        for server in self._server.servers:
            server.close()
        self._sockets.clear()


def _order(prompt: dict[str, Any]) -> list[str]:
    """The output nodes' ancestors and themselves, dependencies first."""
    seen: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        for value in prompt[node_id].get("inputs", {}).values():
            if _is_link(value):
                visit(str(value[0]))
        seen.append(node_id)

    for node_id, node in prompt.items():
        if _is_output(node):
            visit(node_id)
    return seen


def _cache_key(prompt: dict[str, Any], node_id: str) -> str:
    node = prompt[node_id]
    parts = {
        name: _cache_key(prompt, str(value[0])) if _is_link(value) else value
        for name, value in node.get("inputs", {}).items()
    }
    return hashlib.sha256(
        json.dumps([node["class_type"], parts], sort_keys=True).encode()
    ).hexdigest()


def _colour(seed: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(str(seed).encode()).digest()
    return digest[0], digest[1], digest[2]


def _png(colour: tuple[int, int, int], width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _ms() -> int:
    return int(time.time() * 1000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
