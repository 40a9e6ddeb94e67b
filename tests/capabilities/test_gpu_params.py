"""Unbounded or hostile parameters of the GPU services are refused at submission (the
capability schemas) and, for model names, again on the worker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from apps.capabilities.context import NodeContext
from apps.capabilities.registry import get_registry
from apps.capabilities.services.gpu_common import base_model
from myspinbot.errors import PermanentError


def errors(service: str, params: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(params)'}: {e.validator}"
        for e in get_registry().get(service).params_errors(params)
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the default run (1500 steps): a sample or checkpoint every step would be 1500
        ({"sample_every": 1}, ["sample_every: not", "sample_every: not"]),
        ({"checkpoint_every": 99}, ["checkpoint_every: not"]),
        ({"steps": 500, "checkpoint_every": 5}, ["checkpoint_every: not"]),
        ({"steps": 20000, "sample_every": 50}, ["sample_every: not"]),
        ({"sample_every": 20001}, ["sample_every: maximum"]),
        ({"checkpoint_every": -1}, ["checkpoint_every: minimum"]),
    ],
)
def test_lora_samples_and_checkpoints_are_bounded(
    params: dict[str, Any], expected: list[str]
) -> None:
    assert errors("lora.train", params) == expected


def test_the_refusal_says_which_values_are_too_frequent() -> None:
    (error,) = get_registry().get("lora.train").params_errors({"steps": 500, "sample_every": 5})

    assert error.message == (
        "5 should not be valid under {'exclusiveMinimum': 0, 'exclusiveMaximum': 10}"
    )


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sample_every": 0, "checkpoint_every": 0},
        {"sample_every": 100, "checkpoint_every": 250},
        {"steps": 500, "sample_every": 10},
        {"steps": 60, "checkpoint_every": 3},
        {"steps": 6, "checkpoint_every": 1, "sample_every": 3},
        {"steps": 20000, "sample_every": 20000, "checkpoint_every": 100},
    ],
)
def test_lora_runs_with_sparse_samples_are_accepted(params: dict[str, Any]) -> None:
    assert errors("lora.train", params) == []


@pytest.mark.parametrize("service", ["lora.train", "image.keyframe", "video.animate"])
@pytest.mark.parametrize(
    "name",
    [
        "../../etc",
        "sd/../../secrets",
        "/etc/ssl",
        "./sd",
        ".",
        "",
        "https://evil.example/model",
        "C:\\models\\sd",
        "a/b/c/d/e",
    ],
)
def test_a_base_model_is_a_plain_name_under_the_model_root(service: str, name: str) -> None:
    assert errors(service, {"base_model": name}) == ["base_model: pattern"]


@pytest.mark.parametrize(
    "name", ["stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5", "sd-1.5_tiny"]
)
def test_model_names_pass_the_schema(name: str) -> None:
    assert errors("lora.train", {"base_model": name}) == []


def ctx_with(params: dict[str, Any]) -> NodeContext:
    return cast(NodeContext, SimpleNamespace(params=params))


def test_on_the_worker_a_named_model_must_be_installed_under_the_root(
    tmp_path: Path, settings: Any
) -> None:
    settings.MYSPINBOT_MODEL_ROOT = tmp_path / "models"
    settings.MYSPINBOT_BASE_MODEL = "org/operator-choice"
    (tmp_path / "models" / "sd-tiny").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()

    assert base_model(ctx_with({})) == "org/operator-choice"
    assert base_model(ctx_with({"base_model": "sd-tiny"})) == "sd-tiny"
    refused = []
    for name in ["runwayml/stable-diffusion-v1-5", "../elsewhere", "sd-tiny\n"]:
        with pytest.raises(PermanentError) as raised:
            base_model(ctx_with({"base_model": name}))
        refused.append((raised.value.code, raised.value.message))

    assert refused == [
        (
            "model_unavailable",
            "base model 'runwayml/stable-diffusion-v1-5' is not installed on this worker",
        ),
        ("model_unavailable", "base model '../elsewhere' is not installed on this worker"),
        ("model_unavailable", "base model 'sd-tiny\\n' is not installed on this worker"),
    ]
    assert all(str(tmp_path) not in message for _, message in refused)
