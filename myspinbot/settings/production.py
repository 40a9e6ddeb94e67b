"""Production: secrets and hosts must come from the environment; no defaults."""

from __future__ import annotations

from myspinbot.settings.base import *  # noqa: F403
from myspinbot.settings.base import database_from_url
from myspinbot.settings.env import env_bool, env_int, env_list, env_str, env_url

DEBUG = False
SECRET_KEY = env_str("SECRET_KEY")
if len(SECRET_KEY) < 32:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters in production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
_database_url = env_url("DATABASE_URL", schemes=("postgres", "postgresql"))
assert _database_url is not None
DATABASES = {"default": database_from_url(_database_url)}
MYSPINBOT_DEBUG_SERVICES = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
# HSTS for a year once cookies are HTTPS-only (the default): browsers then refuse plain
# HTTP to this host. Set SECURE_HSTS_SECONDS=0 to turn it off.
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS", 31_536_000 if SESSION_COOKIE_SECURE else 0, min_value=0
)
SECURE_CONTENT_TYPE_NOSNIFF = True
