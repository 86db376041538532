"""Settings for the processes the story test starts (web server, workers, model server): the
demo's own settings (`config.settings.dev`, a Redis broker from REDIS_URL, the database from
DATABASE_URL), with the test suite's password hasher, so the users the test creates can log in,
and evaluations small enough for a tiny model."""

from config.settings.dev import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SIGNOFF_TRAINING = {
    **SIGNOFF_TRAINING,  # noqa: F405
    "PROGRESS_SECONDS": 0.5,
    "HEARTBEAT_SECONDS": 2,
    "EVAL_GENERATION_SAMPLES": 3,
    "EVAL_MAX_NEW_TOKENS": 12,
    "DEVICE": "cpu",
}
SIGNOFF_GOVERNANCE = {**SIGNOFF_GOVERNANCE, "GENERATE_MAX_NEW_TOKENS": 24}  # noqa: F405
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
