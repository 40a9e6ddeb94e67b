"""``manage.py expire_uploads``: delete the uploads nothing has used for
``MYSPINBOT_UPLOAD_EXPIRE_DAYS`` days now (the workers' sweeper also does it every
``MYSPINBOT_UPLOAD_EXPIRE_EVERY`` seconds)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.jobs import quotas


class Command(BaseCommand):
    help = "Delete uploads that no job has named and no profile has held for the expiry period."

    def handle(self, *args: Any, **options: Any) -> None:
        expired = quotas.expire_uploads()
        self.stdout.write(f"expired {len(expired)} uploads")
        for upload_id in expired:
            self.stdout.write(f"  {upload_id}")
