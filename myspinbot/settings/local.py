"""One machine: ``make run``. Safe defaults, debug services on."""

from __future__ import annotations

from myspinbot.settings.base import *  # noqa: F403
from myspinbot.settings.env import env_bool, env_str

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "local-development-key-not-for-production")
MYSPINBOT_DEBUG_SERVICES = env_bool("MYSPINBOT_DEBUG_SERVICES", True)
