"""What a service handler receives: :class:`NodeContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, overload

from myspinbot.errors import Cancelled

ProfileKind = Literal["voice", "lora"]


@dataclass(frozen=True)
class StoredProfile:
    """A trained result of the job's owner, as a handler sees it."""

    id: str
    kind: ProfileKind
    name: str
    data: dict[str, Any]


class Profiles(Protocol):
    """The profiles of the job's owner (implemented by ``apps.jobs.profiles``)."""

    def find(self, kind: ProfileKind, profile_id: str) -> StoredProfile | None:
        """The owner's profile ``profile_id`` of ``kind``; None when there is none (or it
        is another user's, or ``profile_id`` is not a profile id)."""
        ...

    def save(self, kind: ProfileKind, name: str, data: dict[str, Any]) -> str:
        """Store (or, when this node built one before, update) this node's profile and
        return its id. Raises ``Cancelled`` when this attempt is no longer the running
        one, so a superseded attempt never overwrites its successor's profile."""
        ...


class _Workdir:
    """The ``workdir`` field: a folder, or a function that makes one, called the first
    time a handler asks for it (most handlers never do, and then no folder is made)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    @overload
    def __get__(self, instance: None, owner: type) -> None: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Path | None: ...
    def __get__(self, instance: object | None, owner: type) -> Path | None:
        if instance is None:
            return None  # the dataclass's default
        value = instance.__dict__.get(self.slot)
        if callable(value):
            value = value()
            instance.__dict__[self.slot] = value
        return value

    def __set__(self, instance: object, value: Path | Callable[[], Path] | None) -> None:
        # Left out, the dataclass passes its default: this descriptor itself.
        instance.__dict__[self.slot] = None if isinstance(value, _Workdir) else value


def made_workdir(context: NodeContext) -> Path | None:
    """The context's scratch folder if it exists already (without making it)."""
    value = context.__dict__.get("_workdir")
    return value if isinstance(value, Path) else None


@dataclass
class NodeContext:
    """Everything a handler may use; the worker builds one per attempt. A handler needs
    nothing else: it imports no model and opens no database connection of its own.

    ``attempt`` counts from 1. ``params`` are the node's parameters, already valid
    against the service's parameter schema, with the schema's ``default`` filled in for
    each one left out (:meth:`Capability.with_defaults`), so a handler reads
    ``ctx.params["steps"]`` and each default is written once, in ``capability.json``.
    ``owner_id`` is the job's owner and ``profiles`` that owner's profiles. ``inputs``
    maps each predecessor node id to that node's output. ``store`` is the artifact store
    (the storage interface of ``apps.jobs``). ``progress_callback(fraction, message)``
    records progress;
    ``cancelled_callback()`` says whether the job was cancelled.

    A handler returns its output as a JSON object and reports progress through
    :meth:`progress`, which is also where it learns about cancellation.
    """

    job_id: str
    node_id: str
    attempt: int
    params: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    store: Any
    progress_callback: Callable[[float, str | None], None] = field(repr=False)
    cancelled_callback: Callable[[], bool] = field(repr=False)
    # Saving and reading artifacts (``apps.jobs.artifacts.NodeArtifacts``): ``save(name,
    # bytes | path | file, content_type) -> reference``, ``open(reference)``,
    # ``fetch(reference, folder) -> path``, ``saved(prefix) -> [reference]`` (this node's
    # own, newest name first).
    artifacts: Any = field(default=None, repr=False)
    # A private scratch folder for this attempt, removed when the handler returns. The
    # worker passes a function that makes it: the folder exists once a handler reads this.
    workdir: _Workdir = field(default=_Workdir(), repr=False)
    owner_id: int | None = None
    profiles: Profiles | None = field(default=None, repr=False)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report ``fraction`` (clamped to 0..1) done, then stop if the job was cancelled.

        Raises :class:`~myspinbot.errors.Cancelled` after recording the progress
        when the job was cancelled, so a handler that reports progress regularly stops
        within one step of a cancel.
        """
        self.progress_callback(min(1.0, max(0.0, fraction)), message)
        if self.cancelled_callback():
            raise Cancelled(f"job {self.job_id} was cancelled (node {self.node_id})")

    def cancelled(self) -> bool:
        """Return whether the job was cancelled; for handlers that clean up before stopping."""
        return self.cancelled_callback()
