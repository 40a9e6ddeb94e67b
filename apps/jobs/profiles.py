"""The profiles of one job's owner, as the node handlers of that job see them
(:class:`apps.capabilities.context.Profiles`)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from apps.capabilities.context import ProfileKind, StoredProfile
from apps.jobs.artifacts import attempt_is_running
from apps.jobs.models import Profile
from myspinbot.errors import Cancelled


class NodeProfiles:
    """Profiles for one node attempt: read the owner's, write the node's own."""

    def __init__(self, *, job_id: str, node_id: str, attempt: int, owner_id: int) -> None:
        self.job_id, self.node_id, self.attempt, self.owner_id = job_id, node_id, attempt, owner_id

    def find(self, kind: ProfileKind, profile_id: str) -> StoredProfile | None:
        try:
            wanted = uuid.UUID(str(profile_id))
        except ValueError:
            return None
        profile = Profile.objects.filter(pk=wanted, owner_id=self.owner_id, kind=kind).first()
        return None if profile is None else _stored(profile)

    def save(self, kind: ProfileKind, name: str, data: dict[str, Any]) -> str:
        with transaction.atomic():
            if not attempt_is_running(self.job_id, self.node_id, self.attempt):
                raise Cancelled(
                    f"attempt {self.attempt} of {self.job_id}:{self.node_id} is no longer "
                    "the running one; its profile was not stored"
                )
            profile, _ = Profile.objects.update_or_create(
                job_id=self.job_id,
                node_id=self.node_id,
                defaults={"owner_id": self.owner_id, "kind": kind, "name": name, "data": data},
            )
        return str(profile.pk)


def _stored(profile: Profile) -> StoredProfile:
    kind: ProfileKind = "lora" if profile.kind == Profile.Kind.LORA else "voice"
    return StoredProfile(id=str(profile.pk), kind=kind, name=profile.name, data=profile.data)
