"""The service registry: every ``capability.json`` declaration, read once per process.

The registry reads declarations only and never imports a handler module, so the web
process knows every service (its queue, parameter schema and limits) without importing
torch. The worker that runs a service imports its handler with :func:`load_handler`.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jsonschema import Draft202012Validator, FormatChecker, SchemaError, ValidationError

from myspinbot.queues import Queue
from myspinbot.schemas import schema_validator

if TYPE_CHECKING:
    from apps.capabilities.context import NodeContext

Handler = Callable[["NodeContext"], dict[str, Any]]

SERVICES_DIR = Path(__file__).resolve().parent / "services"
DEBUG_PREFIX = "debug."


class CapabilityDeclarationError(ValueError):
    """A ``capability.json`` is unreadable or does not match ``capability.schema.json``.

    The message starts with the file (or other source) it came from.
    """


class UnknownService(KeyError):
    """No capability with this service id is registered."""

    def __init__(self, service_id: str, known: Iterable[str]) -> None:
        self.service_id = service_id
        known_ids = sorted(known)
        listing = ", ".join(known_ids) if known_ids else "none"
        self.message = f"unknown service {service_id!r}; registered services: {listing}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def json_path(parts: Iterable[str | int]) -> str:
    """Format a JSON location like ``nodes[3].retries.maxAttempts`` ("" for the root)."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class Port:
    """A named input or output of a service; ``kind`` says what the value is."""

    name: str
    kind: str
    description: str = ""
    # For a list input: the fewest and most items it takes (``count`` in the declaration).
    count: tuple[int, int] | None = None
    # For an input: the predecessor outputs it takes (``reads``; default its own name).
    reads: tuple[str, ...] = ()
    # For an output: its measured properties (``produces``), see ``apps.graphs.contracts``.
    produces: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def takes(self) -> tuple[str, ...]:
        """The names of the predecessor outputs this input is fed from."""
        return self.reads or (self.name,)

    def to_json(self) -> dict[str, Any]:
        """Return the declaration form: ``{name, description, kind[, reads, produces, count]}``."""
        port: dict[str, Any] = {"name": self.name, "description": self.description}
        port["kind"] = self.kind
        if self.reads:
            port["reads"] = list(self.reads)
        if self.produces:
            port["produces"] = copy.deepcopy(self.produces)
        if self.count is not None:
            port["count"] = {"min": self.count[0], "max": self.count[1]}
        return port


@dataclass(frozen=True)
class Capability:
    """One service, as declared in its ``capability.json``.

    Build it with :meth:`from_declaration`, which validates the declaration against
    ``schemas/capability.schema.json`` and checks that ``params`` is a JSON Schema.
    ``params_schema`` is the ``params`` JSON Schema; do not mutate it.
    """

    id: str
    version: str
    label: str
    description: str
    queue: Queue
    params_schema: dict[str, Any] = field(hash=False)
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    timeout_seconds: int
    max_attempts: int
    cacheable: bool
    idempotent: bool
    handler: str
    # Contract: input kind -> measured property -> {"min", "max"} (``accepts``).
    accepts: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=dict, hash=False, compare=False
    )
    _params_validator: Draft202012Validator = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        validator = Draft202012Validator(self.params_schema, format_checker=FormatChecker())
        object.__setattr__(self, "_params_validator", validator)

    @classmethod
    def from_declaration(cls, declaration: object, *, source: str = "<declaration>") -> Capability:
        """Validate a parsed declaration and build the capability.

        Raises :class:`CapabilityDeclarationError` naming ``source`` and every problem
        (with its JSON path) when the declaration does not match the schema or its
        ``params`` is not a valid JSON Schema.
        """
        errors = sorted(
            schema_validator("capability").iter_errors(declaration),
            key=lambda error: (json_path(error.absolute_path), error.message),
        )
        if errors:
            problems = "; ".join(
                f"{json_path(error.absolute_path) or '<root>'}: {error.message}" for error in errors
            )
            raise CapabilityDeclarationError(
                f"{source}: invalid capability declaration: {problems}"
            )
        data = cast(dict[str, Any], declaration)
        try:
            Draft202012Validator.check_schema(data["params"])
        except SchemaError as exc:
            raise CapabilityDeclarationError(
                f"{source}: 'params' is not a valid JSON Schema: {exc.message}"
            ) from exc
        return cls(
            id=data["id"],
            version=data["version"],
            label=data["label"],
            description=data.get("description", ""),
            queue=data["queue"],
            params_schema=copy.deepcopy(data["params"]),
            inputs=tuple(_port(item) for item in data.get("inputs", [])),
            outputs=tuple(_port(item) for item in data.get("outputs", [])),
            timeout_seconds=data["timeoutSeconds"],
            max_attempts=data["maxAttempts"],
            cacheable=data["cacheable"],
            idempotent=data["idempotent"],
            handler=data["handler"],
            accepts=copy.deepcopy(data.get("accepts", {})),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the declaration with the schema's camelCase names (a valid declaration)."""
        declaration: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "label": self.label,
            "description": self.description,
            "queue": self.queue,
            "params": copy.deepcopy(self.params_schema),
            "inputs": [port.to_json() for port in self.inputs],
            "outputs": [port.to_json() for port in self.outputs],
            "timeoutSeconds": self.timeout_seconds,
            "maxAttempts": self.max_attempts,
            "cacheable": self.cacheable,
            "idempotent": self.idempotent,
            "handler": self.handler,
        }
        if self.accepts:
            declaration["accepts"] = copy.deepcopy(self.accepts)
        return declaration

    def input(self, name: str) -> Port:
        """The declared input ``name`` (KeyError when there is none)."""
        for port in self.inputs:
            if port.name == name:
                return port
        raise KeyError(f"{self.id} declares no input {name!r}")

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the ``default`` of every parameter it leaves out, from the
        parameter schema (nested objects too): the one place a default is written."""
        return _fill_defaults(self.params_schema, params)

    def params_errors(self, params: object) -> list[ValidationError]:
        """Return the jsonschema errors of ``params``, ordered by path then message."""
        return sorted(
            self._params_validator.iter_errors(params),
            key=lambda error: (json_path(error.absolute_path), error.message),
        )

    def validate_params(self, params: object) -> list[str]:
        """Return one ``"$.path: message"`` line per problem in ``params``; [] when valid."""
        return [f"{error.json_path}: {error.message}" for error in self.params_errors(params)]


def _fill_defaults(schema: Mapping[str, Any], value: Mapping[str, Any]) -> dict[str, Any]:
    filled = copy.deepcopy(dict(value))
    for name, subschema in schema.get("properties", {}).items():
        if not isinstance(subschema, Mapping):
            continue
        if name not in filled and "default" in subschema:
            filled[name] = copy.deepcopy(subschema["default"])
        if isinstance(filled.get(name), Mapping) and subschema.get("type") == "object":
            filled[name] = _fill_defaults(subschema, filled[name])
    return filled


def _port(item: Mapping[str, Any]) -> Port:
    count = item.get("count")
    return Port(
        name=item["name"],
        kind=item["kind"],
        description=item.get("description", ""),
        count=(int(count["min"]), int(count["max"])) if count else None,
        reads=tuple(item.get("reads", ())),
        produces=copy.deepcopy(item.get("produces", {})),
    )


class CapabilityRegistry:
    """The set of known services, by id."""

    def __init__(self, capabilities: Iterable[Capability]) -> None:
        """Index ``capabilities``; ``ValueError`` when two share an id."""
        self._by_id: dict[str, Capability] = {}
        for capability in capabilities:
            if capability.id in self._by_id:
                raise ValueError(f"service {capability.id!r} is declared twice")
            self._by_id[capability.id] = capability

    @classmethod
    def from_directories(cls, dirs: Iterable[Path], *, include_debug: bool) -> CapabilityRegistry:
        """Read every ``<dir>/*/capability.json`` of each directory in ``dirs``.

        ``debug.*`` services are left out unless ``include_debug``. Raises
        :class:`CapabilityDeclarationError` naming the file when a declaration is not
        valid JSON or not a valid capability, when two files declare the same id, or
        when a directory does not exist.
        """
        capabilities: list[Capability] = []
        sources: dict[str, Path] = {}
        for directory in dirs:
            directory = Path(directory)
            if not directory.is_dir():
                raise CapabilityDeclarationError(
                    f"{directory}: capability directory does not exist"
                )
            for path in sorted(directory.glob("*/capability.json")):
                capability = _read_declaration(path)
                if capability.id in sources:
                    raise CapabilityDeclarationError(
                        f"{path}: service {capability.id!r} is already declared in "
                        f"{sources[capability.id]}"
                    )
                sources[capability.id] = path
                if include_debug or not capability.id.startswith(DEBUG_PREFIX):
                    capabilities.append(capability)
        return cls(capabilities)

    def get(self, service_id: str) -> Capability:
        """Return the capability ``service_id``; :class:`UnknownService` when absent."""
        try:
            return self._by_id[service_id]
        except KeyError:
            raise UnknownService(service_id, self._by_id) from None

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._by_id

    def __iter__(self) -> Iterator[Capability]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Capability]:
        """Return every capability, sorted by id."""
        return [self._by_id[service_id] for service_id in sorted(self._by_id)]


def _read_declaration(path: Path) -> Capability:
    try:
        declaration = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CapabilityDeclarationError(f"{path}: cannot read declaration: {exc}") from exc
    return Capability.from_declaration(declaration, source=str(path))


@functools.cache
def get_registry() -> CapabilityRegistry:
    """Return this process's registry, built once.

    It holds the services under ``apps/capabilities/services/`` plus those under each
    directory of the Django setting ``MYSPINBOT_CAPABILITY_DIRS`` (default ``[]``);
    ``debug.*`` services only when the setting ``MYSPINBOT_DEBUG_SERVICES`` is true.
    Tests that change those settings call ``get_registry.cache_clear()``.
    """
    from django.conf import settings

    extra_dirs = [Path(d) for d in getattr(settings, "MYSPINBOT_CAPABILITY_DIRS", [])]
    return CapabilityRegistry.from_directories(
        [SERVICES_DIR, *extra_dirs],
        include_debug=bool(getattr(settings, "MYSPINBOT_DEBUG_SERVICES", False)),
    )


def load_handler(capability: Capability) -> Handler:
    """Import and return the handler function named by ``capability.handler``.

    Raises ``ImportError`` naming the service when the module or function is missing
    or the attribute is not callable.
    """
    module_name, _, function_name = capability.handler.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"service {capability.id!r}: cannot import handler module {module_name!r}: {exc}"
        ) from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise ImportError(
            f"service {capability.id!r}: {capability.handler!r} is not a callable handler"
        )
    return cast(Handler, handler)
