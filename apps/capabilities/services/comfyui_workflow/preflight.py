"""Refusing, at submission, a ComfyUI workflow that uses a node class no server has."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from apps.capabilities.services.comfyui_workflow import workflow as wf
from apps.capabilities.services.comfyui_workflow.handler import servers
from myspinbot.errors import Rejected, TransientError

SERVICE = "comfyui.workflow"


class SubmittedNode(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def params(self) -> dict[str, Any]: ...


def refuse_missing_nodes(nodes: Iterable[SubmittedNode]) -> None:
    """Raise ``Rejected(422, "comfyui_missing_node")`` naming the node and the classes
    when a ``comfyui.workflow`` node's workflow uses node classes that every configured
    server which answers ``/object_info`` lacks. Servers that do not answer are left to
    the run (which retries while they are down); no server answering refuses nothing."""
    wanted = [
        (n.id, wf.class_types(n.params.get("workflow") or {}))
        for n in nodes
        if n.service == SERVICE
    ]
    if not wanted:
        return
    known: list[set[str]] = []
    for server in servers():
        try:
            known.append(server.node_classes())
        except (TransientError, ValueError):
            continue
    if not known:
        return
    for node_id, classes in wanted:
        missing = [sorted(classes - have) for have in known]
        if all(missing):
            fewest = min(missing, key=len)
            raise Rejected(
                422,
                "comfyui_missing_node",
                f"node {node_id!r}: the ComfyUI server has no node class {', '.join(fewest)} "
                "(is the custom node installed?)",
                details={"node": node_id, "missing": fewest},
            )
