"""Test suite: fast hashing, a stub broker, whatever database DATABASE_URL names."""

from config.strict_templates import UNRESOLVED

from .base import *  # noqa: F403

SECRET_KEY = "test-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

if DATABASES["default"]["ENGINE"] == "config.sqlite_backend":  # noqa: F405
    # Threads in tests need a real file: an in-memory SQLite is private to one connection.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.stub.StubBroker",
    "OPTIONS": {},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
    ],
}
# A variable that does not resolve fails the test instead of rendering as nothing; the
# builtin library's `{% for %}` refuses to loop over one (config/strict_templates.py).
TEMPLATES[0]["OPTIONS"]["string_if_invalid"] = UNRESOLVED  # noqa: F405
TEMPLATES[0]["OPTIONS"]["builtins"] = ["config.strict_templates"]  # noqa: F405
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (WhiteNoise warns when it is missing)
# Most tests read an audit event's `seq` and `hash` right after the change that wrote it: seal
# in the appender's transaction, as before the sealer. The audit tests (tests/core/
# test_audit_sealer.py, tests/reviews/test_audit*.py, the tamper tests) switch back to
# "deferred", the production default, and seal as production does (core/audit/sealer.py).
AUDIT_SEALING = "inline"
