"""Settings shared by every environment; everything that varies comes from the environment."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("SIGNOFF_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_dramatiq",
    "core",
    "reviews",
    "datasets_app",
    "training_app",
    "governance",
    "serving",
    "monitoring",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Innermost, so a database error in a page becomes 503 + Retry-After, not 500.
    "core.http.RetryableDatabaseErrorMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.roles",
            ],
        },
    },
]


def database_config(url: str | None) -> dict:
    """SQLite by default (a file under var/); PostgreSQL via DATABASE_URL."""
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{VAR_DIR / 'signoff.sqlite3'}"
    config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["ENGINE"] = "config.sqlite_backend"
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            # Writers take the lock up front, so two claimers never deadlock upgrading a read
            # lock, and waits are absorbed by busy_timeout instead of "database is locked".
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            ),
        }
    return config


DATABASES = {"default": database_config(os.environ.get("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# A batch of 1,000 outputs at the documented size limit must fit; anything larger is refused
# with 400 before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("SIGNOFF_MAX_BODY_BYTES", 32 * 1024 * 1024))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.http.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Signoff API",
    "DESCRIPTION": (
        "Human-in-the-loop review and model governance: ingest model outputs, review them "
        "under leases, and keep a hash-chained audit log."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several lifecycle models have a `status`; name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "OutputStatusEnum": "reviews.models.Output.Status",
        "DatasetVersionStatusEnum": "datasets_app.models.DatasetVersion.Status",
        "TrainingRunStatusEnum": "training_app.models.TrainingRun.Status",
        "ModelVersionStatusEnum": "training_app.models.ModelVersion.Status",
        "EvaluationStatusEnum": "training_app.models.Evaluation.Status",
    },
}

# Broker: REDIS_URL when given; `make demo` starts an embedded Redis and sets it.
REDIS_URL = os.environ.get("REDIS_URL", "")
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {"url": REDIS_URL or "redis://127.0.0.1:6379/0"},
    # Listed explicitly: django-dramatiq's defaults include a Prometheus middleware that does
    # not import with Dramatiq 2.
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
# An idle worker polls Redis with a backoff capped at this many ms (Dramatiq's default, 1000,
# adds up to a second before a queued run starts). `rundramatiq` execs the dramatiq CLI, which
# reads it from the environment at import.
os.environ.setdefault("dramatiq_worker_timeout", os.environ.get("SIGNOFF_WORKER_POLL_MS", "100"))

# Fine-tuning (training_app). The training queue's worker runs one thread with prefetch 1
# (config/dramatiq.py); a run is leased in the database and a sweeper takes back runs whose
# heartbeat went stale.
SIGNOFF_TRAINING = {
    "MODELS_DIR": Path(os.environ.get("SIGNOFF_MODELS_DIR", VAR_DIR / "models")),
    "RUNS_DIR": VAR_DIR / "training",
    "DEFAULT_BASE_MODEL": "smollm2-135m-instruct",
    # Dramatiq's 10-minute default would kill a run; this one bounds a runaway job.
    "TIME_LIMIT_MS": int(float(os.environ.get("SIGNOFF_TRAINING_TIME_LIMIT_HOURS", 24)) * 3600e3),
    "MAX_ATTEMPTS": int(os.environ.get("SIGNOFF_TRAINING_MAX_ATTEMPTS", 3)),
    "HEARTBEAT_SECONDS": 10,
    "STALE_AFTER_SECONDS": int(os.environ.get("SIGNOFF_TRAINING_STALE_SECONDS", 120)),
    # A queued job whose broker message is older than this and no longer in Redis is resent.
    "RESEND_AFTER_SECONDS": int(os.environ.get("SIGNOFF_TRAINING_RESEND_SECONDS", 60)),
    "PROGRESS_SECONDS": 2.0,
    "LOG_LINES": 200,
    "EVAL_GENERATION_SAMPLES": 16,
    "EVAL_MAX_NEW_TOKENS": 80,
    "DEVICE": os.environ.get("SIGNOFF_TRAINING_DEVICE", "auto"),
}

# Governance (issue 6): sign-off policy defaults, the regression gate, the model server.
SIGNOFF_GOVERNANCE = {
    # The model server folds adapters into the base (merge_and_unload) when this is on.
    "SERVING_MERGE_ADAPTERS": os.environ.get("SIGNOFF_SERVING_MERGED") == "1",
    # Every channel's policy starts from this; Channel.policy overrides keys of it.
    "DEFAULT_POLICY": {
        "approvals_required": int(os.environ.get("SIGNOFF_APPROVALS_REQUIRED", 1)),
        "approver_role": "approver",
        # Whoever launched the training run or built its dataset cannot approve it.
        "separation_of_duties": True,
        "allow_override": True,
        # Gated metric -> tolerated worsening against the live version (absolute).
        "gate": {"eval_loss": 0.10, "rouge_l": 0.05, "token_f1": 0.05},
    },
    "LOWER_IS_BETTER": ["eval_loss", "perplexity"],
    # The model server (`manage.py serve_models`); the web process only talks HTTP to it.
    "SERVING_URL": os.environ.get("SIGNOFF_SERVING_URL", "http://127.0.0.1:8765"),
    # The secret the web process shows it (empty: one derived from SECRET_KEY).
    "SERVING_TOKEN": os.environ.get("SIGNOFF_SERVING_TOKEN", ""),
    "SERVING_TIMEOUT_SECONDS": float(os.environ.get("SIGNOFF_SERVING_TIMEOUT", 120)),
    # Model server processes (`serve_models --workers`): "auto" is one per CPU core, at most 2;
    # each holds its own copy of the weights (docs/serving.md, "Worker processes").
    "SERVING_WORKERS": os.environ.get("SIGNOFF_SERVING_WORKERS", "auto"),
    "GENERATE_MAX_NEW_TOKENS": 96,
    "PROMPT_MAX_CHARS": 4000,
}

# Serving backend (issue 20; docs/serving.md): "embedded" is the model server above
# (`manage.py serve_models`, what `make demo` runs); "openai" is one or more OpenAI-compatible
# inference engines (vLLM on GPU boxes, llama.cpp's llama-server on CPU boxes). Signoff holds
# the engines' only API key, and loads each deployed version's adapter into every engine.
SIGNOFF_SERVING = {
    "BACKEND": os.environ.get("SIGNOFF_SERVING_BACKEND", "embedded"),
    # Comma-separated: a deploy reaches every engine; generate spreads requests over them.
    "ENGINE_URLS": [
        u.strip() for u in os.environ.get("SIGNOFF_ENGINE_URLS", "").split(",") if u.strip()
    ],
    "ENGINE_API_KEY": os.environ.get("SIGNOFF_ENGINE_API_KEY", ""),
    "ENGINE_FLAVOUR": os.environ.get("SIGNOFF_ENGINE_FLAVOUR", "vllm"),  # vllm | llamacpp
    # Where Signoff writes the adapters it deploys (storage the engines share), and the same
    # folder as the engines see it (default: the same path).
    "ENGINE_ADAPTERS_DIR": Path(
        os.environ.get("SIGNOFF_ENGINE_ADAPTERS_DIR", VAR_DIR / "engine-adapters")
    ),
    "ENGINE_ADAPTERS_PATH": os.environ.get("SIGNOFF_ENGINE_ADAPTERS_PATH", ""),
    "ENGINE_TIMEOUT_SECONDS": float(os.environ.get("SIGNOFF_ENGINE_TIMEOUT", 120)),
    "ENGINE_ADMIN_TIMEOUT_SECONDS": float(os.environ.get("SIGNOFF_ENGINE_ADMIN_TIMEOUT", 60)),
}

SIGNOFF_MONITORING = {
    # Drift: a live version's correction or rejection rate over the last WINDOW_DAYS, with at
    # least MIN_SAMPLES reviewed outputs, above its baseline by more than MARGIN raises an alert.
    "WINDOW_DAYS": int(os.environ.get("SIGNOFF_MONITORING_WINDOW_DAYS", 7)),
    "MIN_SAMPLES": int(os.environ.get("SIGNOFF_MONITORING_MIN_SAMPLES", 30)),
    "MARGIN": float(os.environ.get("SIGNOFF_MONITORING_MARGIN", 0.10)),
    # Baselines when neither the channel nor the version's evaluation gives one.
    "DEFAULT_BASELINE": {"correction": 0.2, "rejection": 0.05},
    "DEFAULT_AUDIT_SAMPLE_RATE": 0.05,
    # Whom drift alerts are mailed to (Django's mail API); empty: no mail.
    "ALERT_EMAILS": [
        a.strip() for a in os.environ.get("SIGNOFF_ALERT_EMAILS", "").split(",") if a.strip()
    ],
    # Webhooks: attempts, first retry delay (doubled each time), request timeout.
    "WEBHOOK_MAX_ATTEMPTS": 6,
    "WEBHOOK_BACKOFF_SECONDS": 30,
    "WEBHOOK_TIMEOUT_SECONDS": 10,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# The audit log (docs/architecture.md, "The audit log at database speed"): decisions insert their
# events without a lock; `run_maintenance` (and every reader that needs a head) seals them into
# the hash chain. `verify_audit` fails when an event waits longer than the lag. "inline" makes
# every appender seal its own events under the chain head's lock, as before (slower).
# Texts the dataset pipeline never masks as PII: the organisation's own published phone
# numbers and addresses (comma-separated). The default of every build; a build may say otherwise.
SIGNOFF_PII_ALLOW = [
    text.strip() for text in os.environ.get("SIGNOFF_PII_ALLOW", "").split(",") if text.strip()
]
AUDIT_SEALING = os.environ.get("SIGNOFF_AUDIT_SEALING", "deferred")
AUDIT_SEAL_LAG_SECONDS = float(os.environ.get("SIGNOFF_AUDIT_SEAL_LAG_SECONDS", 60))

# Signoff's own knobs.
SIGNOFF = {
    # Largest input / output text accepted, in characters.
    "MAX_TEXT_CHARS": int(os.environ.get("SIGNOFF_MAX_TEXT_CHARS", 100_000)),
    "MAX_BATCH": 1000,
    "MAX_METADATA_BYTES": 16_384,
    "MAX_TAGS": 32,
    "MAX_MESSAGES": 200,
    "DEFAULT_QUEUE": "triage",
    "ESCALATION_QUEUE": "escalations",
}
