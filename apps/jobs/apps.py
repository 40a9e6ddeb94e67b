from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "apps.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        """Open WebSockets re-check their credential when a token, an account or a
        session of their user changes (``apps.jobs.ws_auth``)."""
        from django.contrib.auth.models import User
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from apps.jobs import checks  # noqa: F401 - registers the system checks
        from apps.jobs.models import ApiToken

        def token_changed(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
            announce(instance.user_id)

        def user_saved(sender: Any, instance: User, **kwargs: Any) -> None:
            if not instance.is_active:
                announce(instance.pk)

        def logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
            if user is not None:
                announce(user.pk)

        post_save.connect(token_changed, sender=ApiToken, weak=False)
        post_delete.connect(token_changed, sender=ApiToken, weak=False)
        post_save.connect(user_saved, sender=User, weak=False)
        post_delete.connect(user_saved, sender=User, weak=False)
        user_logged_out.connect(logged_out, weak=False)


def announce(user_id: int) -> None:
    """Tell the user's sockets after the transaction commits (they read the new state)."""
    from django.db import transaction

    from apps.jobs.ws_auth import credentials_changed

    def send() -> None:
        try:
            credentials_changed(user_id)
        except Exception:  # the backstop re-check closes the sockets within seconds
            import logging

            logging.getLogger(__name__).warning(
                "could not announce a credential change of user %s", user_id, exc_info=True
            )

    transaction.on_commit(send)
