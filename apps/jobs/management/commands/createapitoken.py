"""Create an API token for a user and print it (the last line of output)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from apps.jobs.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME; the token is printed once, as the last line."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--name", default="cli", help="a label for the token")

    def handle(
        self, *args: Any, username: str, create_user: bool, name: str, **options: Any
    ) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user {username!r} (use --create-user to create it)")
            user = User.objects.create_user(username)
            self.stderr.write(f"Created user {username!r} (no password: token access only).")
        _, token = ApiToken.issue(user, name=name)
        self.stdout.write(token)
