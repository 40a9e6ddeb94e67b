"""What the GPU services share: photos and LoRA profiles from the database and artifact
store. No torch here; the handlers import ``gpu_tasks`` inside their ``run``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.capabilities.context import NodeContext
from apps.capabilities.errors import PermanentError
from apps.jobs.models import Job, Profile


def job_owner_id(ctx: NodeContext) -> int:
    return int(Job.objects.values_list("owner_id", flat=True).get(pk=ctx.job_id))


def lora_profile(ctx: NodeContext, profile_id: object) -> Profile:
    """The owner's LoRA profile ``profile_id``, or ``PermanentError("bad_input")``."""
    try:
        wanted = uuid.UUID(str(profile_id))
    except ValueError:
        raise PermanentError("bad_input", f"{profile_id!r} is not a profile id") from None
    profile = Profile.objects.filter(
        pk=wanted, owner_id=job_owner_id(ctx), kind=Profile.Kind.LORA
    ).first()
    if profile is None or "lora" not in profile.data:
        raise PermanentError("bad_input", f"no LoRA profile {wanted} of this user")
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


def base_model(ctx: NodeContext) -> str:
    return str(ctx.params.get("base_model") or settings.MYSPINBOT_BASE_MODEL)
