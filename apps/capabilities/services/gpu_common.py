"""What the GPU services share: photos and LoRA profiles from the node's context. No
torch here; the handlers import ``gpu_tasks`` inside their ``run``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.capabilities.context import NodeContext, StoredProfile
from myspinbot.errors import PermanentError


def lora_profile(ctx: NodeContext, profile_id: object) -> StoredProfile:
    """The owner's LoRA profile ``profile_id``, or ``PermanentError("bad_input")``."""
    assert ctx.profiles is not None
    profile = ctx.profiles.find("lora", str(profile_id))
    if profile is None or "lora" not in profile.data:
        raise PermanentError("bad_input", f"no LoRA profile {profile_id} of this user")
    return profile


def find_lora(ctx: NodeContext) -> tuple[dict[str, Any], str] | None:
    """The LoRA a predecessor trained (its ``lora`` ref and ``trigger``), else the one of
    the static input ``lora_profile``, else None."""
    for key, value in ctx.inputs.items():
        if (
            key != "lora_profile"
            and isinstance(value, dict)
            and isinstance(value.get("lora"), dict)
        ):
            return value["lora"], str(value.get("trigger", ""))
    wanted = ctx.inputs.get("lora_profile")
    if wanted is None:
        return None
    profile = lora_profile(ctx, wanted)
    return profile.data["lora"], str(profile.data.get("trigger", ""))


def fetch_lora(ctx: NodeContext, ref: dict[str, Any]) -> Path:
    assert ctx.workdir is not None
    folder = ctx.workdir / "lora"
    folder.mkdir(exist_ok=True)
    return ctx.artifacts.fetch(ref, folder, "pytorch_lora_weights.safetensors")


def find_prompt(ctx: NodeContext) -> str:
    """``params.prompt``, else a predecessor's ``stage_prompt`` (llm.generate_script)."""
    prompt = ctx.params.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip()
    for value in ctx.inputs.values():
        if isinstance(value, dict) and isinstance(value.get("stage_prompt"), str):
            return str(value["stage_prompt"]).strip()
    raise PermanentError("missing_input", "no prompt: give params.prompt or connect a script node")


# A model a user may name: a relative folder under the model root, no "." or ".."
# segments (the same pattern as the services' ``base_model`` parameter schema).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}")


def base_model(ctx: NodeContext) -> str:
    """The base model to load: the operator's ``MYSPINBOT_BASE_MODEL`` (a folder, an
    absolute path or a hub id), or the ``base_model`` parameter, which may only name a
    folder installed under ``MYSPINBOT_MODEL_ROOT``: never a path elsewhere and never
    something to fetch. Raises ``model_unavailable`` naming what was asked, not where
    it was looked for."""
    ref = ctx.params.get("base_model")
    if not ref:
        return str(settings.MYSPINBOT_BASE_MODEL)
    ref = str(ref)
    if not MODEL_NAME.fullmatch(ref) or not (Path(settings.MYSPINBOT_MODEL_ROOT) / ref).is_dir():
        raise PermanentError(
            "model_unavailable", f"base model {ref[:200]!r} is not installed on this worker"
        )
    return ref


def choose_backend(wanted: object, available: list[str], code: str, what: str) -> str:
    """``wanted`` if this worker offers it, else (when nothing is asked) the first of
    ``available``; ``PermanentError(code)`` naming ``what`` and what is offered when
    neither is possible."""
    chosen = str(wanted) if wanted else (available[0] if available else None)
    if chosen is None or chosen not in available:
        known = ", ".join(available) or "none"
        raise PermanentError(
            code, f"{what} {chosen or '(any)'} is not available here; available: {known}"
        )
    return chosen
