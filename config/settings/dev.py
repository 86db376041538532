"""Local development and `make demo`: debug on, SQLite unless DATABASE_URL says otherwise."""

import os

from .base import *  # noqa: F403
from .base import env_bool, env_list

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = SECRET_KEY or "dev-only-insecure-key-do-not-use-in-production"  # noqa: F405
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (WhiteNoise warns when it is missing)

# `make demo` sets SIGNOFF_SERVER_LOG_LEVEL=WARNING for its runserver, so that a line per page
# and static file does not push the ready banner off the screen: only 4xx (WARNING) and 5xx
# (ERROR) requests are logged, through the root handler. Unset: Django's own request log.
SERVER_LOG_LEVEL = os.environ.get("SIGNOFF_SERVER_LOG_LEVEL", "")
if SERVER_LOG_LEVEL:
    _loggers = {**LOGGING.get("loggers", {}), "django.server": {"level": SERVER_LOG_LEVEL}}  # noqa: F405
    LOGGING = {**LOGGING, "loggers": _loggers}  # noqa: F405
