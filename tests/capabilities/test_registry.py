from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from apps.capabilities.registry import (
    SERVICES_DIR,
    Capability,
    CapabilityDeclarationError,
    CapabilityRegistry,
    Port,
    UnknownService,
    get_registry,
    load_handler,
)
from apps.capabilities.services.debug_sleep import handler as sleep_handler
from myspinbot.schemas import schema_validator

DEBUG_IDS = ["debug.echo", "debug.fail", "debug.noop", "debug.sleep"]
# The services a production worker offers (no debug.*); a new service is added here.
SERVICE_IDS = [
    "capabilities.report",
    "comfyui.workflow",
    "image.keyframe",
    "lipsync.gpu",
    "lipsync.sync",
    "llm.generate_script",
    "lora.train",
    "tts.clone",
    "tts.speak",
    "video.animate",
    "video.compose",
    "video.upscale",
    "voice.build_profile",
]


def declaration(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "media.resize",
        "version": "2",
        "label": "Resize",
        "queue": "gpu",
        "params": {
            "type": "object",
            "additionalProperties": False,
            "required": ["width"],
            "properties": {"width": {"type": "integer", "minimum": 1}},
        },
        "timeoutSeconds": 60,
        "maxAttempts": 2,
        "cacheable": True,
        "idempotent": False,
        "handler": "media.resize:run",
    }
    data.update(overrides)
    return data


def write_service(root: Path, folder: str, content: str) -> Path:
    path = root / folder / "capability.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    return path


@pytest.fixture
def registry() -> CapabilityRegistry:
    return CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)


def test_registry_loads_the_debug_services(registry: CapabilityRegistry) -> None:
    assert [capability.id for capability in registry.all()] == sorted(DEBUG_IDS + SERVICE_IDS)
    assert len(registry) == len(DEBUG_IDS + SERVICE_IDS)
    assert "debug.sleep" in registry


def test_debug_service_declarations() -> None:
    registry = CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)

    table = {
        c.id: (c.queue, c.version, c.timeout_seconds, c.max_attempts, c.cacheable, c.idempotent)
        for c in registry.all()
        if c.id.startswith("debug.")
    }

    assert table == {
        "debug.echo": ("cpu", "1", 30, 3, True, True),
        "debug.fail": ("cpu", "1", 30, 3, False, True),
        "debug.noop": ("cpu", "1", 30, 3, True, True),
        "debug.sleep": ("cpu", "1", 3700, 3, False, True),
    }


def test_registry_leaves_out_debug_services_unless_asked() -> None:
    registry = CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=False)

    assert [capability.id for capability in registry.all()] == SERVICE_IDS
    assert "debug.noop" not in registry


def test_registry_reads_extra_directories(tmp_path: Path) -> None:
    write_service(tmp_path, "resize", json.dumps(declaration()))

    registry = CapabilityRegistry.from_directories([SERVICES_DIR, tmp_path], include_debug=False)

    assert [capability.id for capability in registry.all()] == sorted(
        [*SERVICE_IDS, "media.resize"]
    )


def test_registry_does_not_import_handlers() -> None:
    # The web process must learn every service without importing handler modules.
    module = "apps.capabilities.services.debug_fail.handler"
    saved = sys.modules.pop(module, None)
    try:
        CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)

        assert module not in sys.modules
    finally:
        if saved is not None:
            sys.modules[module] = saved


def test_malformed_declaration_names_the_file(tmp_path: Path) -> None:
    path = write_service(tmp_path, "bad", json.dumps(declaration(queue="tpu", maxAttempts=0)))

    with pytest.raises(CapabilityDeclarationError) as caught:
        CapabilityRegistry.from_directories([tmp_path], include_debug=True)

    assert str(caught.value) == (
        f"{path}: invalid capability declaration: "
        "maxAttempts: 0 is less than the minimum of 1; "
        "queue: 'tpu' is not one of ['cpu', 'gpu']"
    )


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = write_service(tmp_path, "broken", "{not json")

    with pytest.raises(CapabilityDeclarationError, match=r"^(.*): cannot read declaration: ") as c:
        CapabilityRegistry.from_directories([tmp_path], include_debug=True)

    assert str(c.value).startswith(f"{path}: ")


def test_params_that_are_not_a_json_schema_are_refused(tmp_path: Path) -> None:
    path = write_service(
        tmp_path, "bad", json.dumps(declaration(params={"type": "object", "minProperties": -1}))
    )

    with pytest.raises(CapabilityDeclarationError) as caught:
        CapabilityRegistry.from_directories([tmp_path], include_debug=True)

    assert str(caught.value) == (
        f"{path}: 'params' is not a valid JSON Schema: -1 is less than the minimum of 0"
    )


def test_duplicate_service_id_names_both_files(tmp_path: Path) -> None:
    first = write_service(tmp_path, "a", json.dumps(declaration()))
    second = write_service(tmp_path, "b", json.dumps(declaration()))

    with pytest.raises(CapabilityDeclarationError) as caught:
        CapabilityRegistry.from_directories([tmp_path], include_debug=True)

    assert str(caught.value) == f"{second}: service 'media.resize' is already declared in {first}"


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(CapabilityDeclarationError) as caught:
        CapabilityRegistry.from_directories([missing], include_debug=True)

    assert str(caught.value) == f"{missing}: capability directory does not exist"


def test_unknown_service_message(registry: CapabilityRegistry) -> None:
    with pytest.raises(UnknownService) as caught:
        registry.get("video.render")

    assert str(caught.value) == (
        "unknown service 'video.render'; registered services: "
        + ", ".join(sorted(DEBUG_IDS + SERVICE_IDS))
    )
    assert isinstance(caught.value, KeyError)
    assert caught.value.service_id == "video.render"


def test_capability_from_declaration_fills_defaults_and_round_trips() -> None:
    capability = Capability.from_declaration(
        declaration(outputs=[{"name": "image", "kind": "image"}])
    )

    assert capability.description == ""
    assert capability.inputs == ()
    assert capability.outputs == (Port(name="image", kind="image", description=""),)
    assert capability.params_schema["required"] == ["width"]
    assert capability.to_json() == declaration(
        description="", inputs=[], outputs=[{"name": "image", "description": "", "kind": "image"}]
    )
    assert list(schema_validator("capability").iter_errors(capability.to_json())) == []


def test_debug_declarations_round_trip_through_to_json(registry: CapabilityRegistry) -> None:
    for capability in registry.all():
        path = SERVICES_DIR / capability.id.replace(".", "_") / "capability.json"

        assert capability.to_json() == json.loads(path.read_text())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"width": 64}, []),
        ({}, ["$: 'width' is a required property"]),
        ({"width": 0}, ["$.width: 0 is less than the minimum of 1"]),
        ({"width": "64"}, ["$.width: '64' is not of type 'integer'"]),
        (
            {"width": 0, "height": 3},
            [
                "$: Additional properties are not allowed ('height' was unexpected)",
                "$.width: 0 is less than the minimum of 1",
            ],
        ),
        ([], ["$: [] is not of type 'object'"]),
    ],
)
def test_validate_params(params: object, expected: list[str]) -> None:
    capability = Capability.from_declaration(declaration())

    assert capability.validate_params(params) == expected


def test_debug_sleep_params(registry: CapabilityRegistry) -> None:
    sleep = registry.get("debug.sleep")

    assert sleep.validate_params({}) == []
    assert sleep.validate_params({"seconds": 0.5}) == []
    assert sleep.validate_params({"seconds": 3601}) == [
        "$.seconds: 3601 is greater than the maximum of 3600"
    ]
    assert sleep.validate_params({"secs": 1}) == [
        "$: Additional properties are not allowed ('secs' was unexpected)"
    ]


def test_load_handler_imports_the_declared_function(registry: CapabilityRegistry) -> None:
    assert load_handler(registry.get("debug.sleep")) is sleep_handler.run


def test_load_handler_names_the_service_when_the_function_is_missing() -> None:
    capability = Capability.from_declaration(
        declaration(handler="apps.capabilities.services.debug_noop.handler:missing")
    )

    with pytest.raises(ImportError) as caught:
        load_handler(capability)

    assert str(caught.value) == (
        "service 'media.resize': 'apps.capabilities.services.debug_noop.handler:missing' "
        "is not a callable handler"
    )


def test_load_handler_names_the_service_when_the_module_is_missing() -> None:
    capability = Capability.from_declaration(declaration(handler="no_such_module.x:run"))

    with pytest.raises(ImportError) as caught:
        load_handler(capability)

    assert str(caught.value) == (
        "service 'media.resize': cannot import handler module 'no_such_module.x': "
        "No module named 'no_such_module'"
    )


def test_get_registry_follows_the_settings(tmp_path: Path) -> None:
    from django.conf import settings
    from django.test import override_settings

    assert settings.configured
    write_service(tmp_path, "resize", json.dumps(declaration()))

    get_registry.cache_clear()
    try:
        with override_settings(
            MYSPINBOT_DEBUG_SERVICES=False, MYSPINBOT_CAPABILITY_DIRS=[str(tmp_path)]
        ):
            production = [capability.id for capability in get_registry().all()]
            get_registry.cache_clear()
        with override_settings(MYSPINBOT_DEBUG_SERVICES=True, MYSPINBOT_CAPABILITY_DIRS=[]):
            debug = [capability.id for capability in get_registry().all()]
    finally:
        get_registry.cache_clear()

    assert production == sorted([*SERVICE_IDS, "media.resize"])
    assert debug == sorted(DEBUG_IDS + SERVICE_IDS)


def test_a_list_input_declares_how_many_items_it_takes() -> None:
    """Photo limits are written once, in lora.train's capability.json, and read from the
    registry by the API, the web page and the service alike."""
    lora = CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=False).get(
        "lora.train"
    )

    assert lora.input("photos").count == (5, 60)
    assert lora.to_json()["inputs"][0]["count"] == {"min": 5, "max": 60}
    assert Capability.from_declaration(lora.to_json()).input("photos").count == (5, 60)
    with pytest.raises(KeyError):
        lora.input("voice")
