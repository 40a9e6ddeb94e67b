"""comfyui.workflow: pick a server → upload inputs → bind → queue → follow the WebSocket
(progress, previews, cache, errors) → download the outputs as artifacts.

A cancel interrupts the prompt and deletes it from the server's queue; see
``capability.json`` for the error codes.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.capabilities.context import NodeContext
from apps.capabilities.services.comfyui_workflow import workflow as wf
from apps.capabilities.services.comfyui_workflow.client import (
    Server,
    Socket,
    execution_error,
    unavailable,
)
from apps.capabilities.services.gpu_common import find_prompt
from myspinbot.errors import Cancelled, PermanentError, ServiceError, TransientError

# How long one wait on the socket lasts: the cancel flag is looked at this often.
POLL_SECONDS = 0.5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def servers() -> list[Server]:
    """The configured servers (``MYSPINBOT_COMFYUI_URLS``)."""
    timeout = float(settings.MYSPINBOT_COMFYUI_TIMEOUT)
    return [Server(str(url), timeout) for url in settings.MYSPINBOT_COMFYUI_URLS]


def pick_server(candidates: list[Server]) -> Server:
    """The reachable server with the shortest queue (the first of equals)."""
    if not candidates:
        raise PermanentError(
            "comfyui_not_configured", "no ComfyUI server is configured (MYSPINBOT_COMFYUI_URLS)"
        )
    lengths: list[tuple[int, int]] = []
    failures: list[str] = []
    for index, server in enumerate(candidates):
        try:
            lengths.append((server.queue_length(), index))
        except TransientError as error:
            failures.append(error.message)
    if not lengths:
        raise TransientError(
            "comfyui_unavailable",
            "; ".join(failures),
            details={"servers": [s.url for s in candidates]},
        )
    return candidates[min(lengths)[1]]


def run(ctx: NodeContext) -> dict[str, Any]:
    """Run the workflow; see ``capability.json``."""
    params = ctx.params
    workflow, bindings = params["workflow"], params.get("bindings", {})
    found = wf.problems(workflow, bindings)
    if found:
        raise PermanentError("bad_input", "; ".join(found), details={"problems": found})
    server = pick_server(servers())
    ctx.progress(0.0, f"uploading inputs to {server.url}")
    bound = wf.bind(workflow, bindings, _values(ctx, server, bindings))
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    # Connected before queueing, so no message of the prompt is missed.
    with Socket(server.url, client_id, server.timeout) as socket:
        try:
            server.queue_prompt(bound, client_id, prompt_id)
            ctx.progress(0.02, f"queued on {server.url} as {prompt_id}")
            run_state = _follow(ctx, server, socket, prompt_id, bound)
        except Cancelled:
            _cancel(server, prompt_id)
            raise
    entry = server.history(prompt_id)
    files = _download(ctx, server, entry.get("outputs", {}))
    ctx.progress(1.0, f"{len(files)} output file(s) from ComfyUI")
    by_kind = {
        kind: next((f["ref"] for f in files if f["ref"]["content_type"].startswith(kind)), None)
        for kind in ("image", "audio", "video")
    }
    return {
        "images": [f["ref"] for f in files if f["ref"]["content_type"].startswith("image/")],
        **by_kind,
        "files": files,
        "previews": run_state.previews,
        "cached_nodes": sorted(run_state.cached),
        "server": {"url": server.url, "prompt_id": prompt_id},
    }


def _values(ctx: NodeContext, server: Server, bindings: dict[str, Any]) -> dict[str, Any]:
    """The bound values: texts and seed from the params, files uploaded to ``server``."""
    params = ctx.params
    values: dict[str, Any] = {}
    if "prompt" in bindings:
        values["prompt"] = find_prompt(ctx)
    for name in ("negative_prompt", "seed"):
        if name in bindings and name in params:
            values[name] = params[name]
    for name, reads in (("image", ("image", "portrait", "keyframes")), ("audio", ("audio",))):
        if name in bindings:
            ref = _find_file(ctx, reads)
            if ref is None:
                raise PermanentError(
                    "missing_input", f"the workflow binds {name!r} but the node has no {name} input"
                )
            filename = _UNSAFE.sub("_", str(ref.get("key", name)).rsplit("/", 1)[-1])
            with ctx.artifacts.open(ref) as handle:
                data = handle.read()
            values[name] = server.upload(
                f"{ctx.job_id}-{filename}", data, str(ref.get("content_type", ""))
            )
    return values


def _find_file(ctx: NodeContext, reads: tuple[str, ...]) -> dict[str, Any] | None:
    """A static input named in ``reads``, else a predecessor's output of that name (a
    list's first item)."""
    candidates: list[Any] = [ctx.inputs.get(name) for name in reads]
    for output in ctx.inputs.values():
        if isinstance(output, dict) and "artifact" not in output:
            candidates += [output.get(name) for name in reads]
    for value in candidates:
        first = value[0] if isinstance(value, list) and value else value
        if isinstance(first, dict) and "artifact" in first:
            return first
    return None


@dataclass
class _RunState:
    total: int
    done: set[str] = field(default_factory=set)
    cached: set[str] = field(default_factory=set)
    previews: list[dict[str, Any]] = field(default_factory=list)
    node: str | None = None

    def fraction(self, within: float = 0.0) -> float:
        # Leave the first and last steps of the bar for queueing and downloading.
        return 0.02 + 0.9 * min(1.0, (len(self.done) + within) / self.total)


def _follow(
    ctx: NodeContext, server: Server, socket: Socket, prompt_id: str, bound: dict[str, Any]
) -> _RunState:
    """Turn the prompt's messages into progress and previews until it ends."""
    state = _RunState(total=len(bound))
    silence = float(settings.MYSPINBOT_COMFYUI_SILENCE)
    heard = time.monotonic()
    while True:
        message = socket.receive(POLL_SECONDS)
        if message.type == "idle":
            if ctx.cancelled():
                raise Cancelled(f"job {ctx.job_id} was cancelled (node {ctx.node_id})")
            if time.monotonic() - heard > silence:
                raise unavailable(
                    server.url, f"no message for {silence:.0f} s while the prompt ran"
                )
            continue
        heard = time.monotonic()
        data = message.data
        if message.type == "preview":
            if len(state.previews) < int(ctx.params["max_previews"]):
                name = f"preview-{len(state.previews) + 1:03d}.{message.extension}"
                state.previews.append(ctx.artifacts.save(name, message.image, message.content_type))
            continue
        if data.get("prompt_id") not in (None, prompt_id):
            continue  # another client's prompt on a shared socket
        kind = message.type
        if kind == "execution_cached":
            state.cached = {str(n) for n in data.get("nodes", [])}
            state.done |= state.cached
            if state.cached:
                ctx.progress(state.fraction(), f"{len(state.cached)} node(s) cached on the server")
        elif kind == "executing" and data.get("node") is None:
            if data.get("prompt_id") == prompt_id:
                return state
        elif kind == "executing":
            if state.node is not None:
                state.done.add(state.node)
            state.node = str(data["node"])
            ctx.progress(
                state.fraction(), f"running node #{state.node} ({_class(bound, state.node)})"
            )
        elif kind == "progress":
            node = str(data.get("node") or state.node)
            value, top = int(data.get("value", 0)), max(1, int(data.get("max", 1)))
            ctx.progress(
                state.fraction(value / top),
                f"node #{node} ({_class(bound, node)}): step {value}/{top}",
            )
        elif kind == "executed":
            state.done.add(str(data.get("node")))
        elif kind == "execution_success":
            return state
        elif kind == "execution_error":
            raise execution_error(server.url, data)
        elif kind == "execution_interrupted":
            if ctx.cancelled():
                raise Cancelled(f"job {ctx.job_id} was cancelled (node {ctx.node_id})")
            raise TransientError(
                "comfyui_interrupted",
                f"the prompt was interrupted on {server.url} at node "
                f"#{data.get('node_id')}, not by this job",
                details={"server": server.url},
            )


def _class(bound: dict[str, Any], node: str) -> str:
    return str(bound.get(node, {}).get("class_type", "?"))


def _cancel(server: Server, prompt_id: str) -> None:
    # A server that is gone runs nothing of ours any more.
    with contextlib.suppress(ServiceError):
        server.cancel(prompt_id)


def _download(ctx: NodeContext, server: Server, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every output file (``type: output``) of every node, stored as an artifact."""
    files: list[dict[str, Any]] = []
    for node_id in sorted(outputs, key=_node_order):
        for produced in outputs[node_id].values():
            if not isinstance(produced, list):
                continue
            for file in produced:
                if (
                    not isinstance(file, dict)
                    or file.get("type") != "output"
                    or not file.get("filename")
                ):
                    continue
                filename = str(file["filename"])
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                name = _UNSAFE.sub("_", f"output-{node_id}-{filename}")[:100]
                ref = ctx.artifacts.save(name, server.view(file), content_type)
                files.append({"node": node_id, "filename": filename, "ref": ref})
    return files


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
