"""Gunicorn configuration for Signoff's web process.

    gunicorn -c deploy/gunicorn.conf.py config.wsgi:application

`config.wsgi` defaults to `config.settings.production`, which refuses to start without
SECRET_KEY and ALLOWED_HOSTS. Every knob below can be set from the environment (see
deploy/signoff.env.example); the defaults suit one web box behind a TLS-terminating proxy on
the same host. Details: docs/operations.md.
"""

import multiprocessing
import os

wsgi_app = "config.wsgi:application"

# Listen on loopback only: the reverse proxy (nginx, Caddy, a load balancer) terminates TLS and
# must be the only client, because Django trusts its X-Forwarded-Proto header
# (SECURE_PROXY_SSL_HEADER). Bind 0.0.0.0:8000 only on a private network behind a balancer.
bind = os.environ.get("SIGNOFF_WEB_BIND", "127.0.0.1:8000").split(",")

# WEB_CONCURRENCY is the conventional name (gunicorn itself reads it too).
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 9)))
# Threads per worker: requests are short and mostly wait on the database; each thread may hold
# one database connection (CONN_MAX_AGE=60), so workers x threads x web boxes must stay under
# PostgreSQL's max_connections (minus the workers' and the maintenance process's connections).
worker_class = "gthread"
threads = int(os.environ.get("SIGNOFF_WEB_THREADS", 4))

# POST /api/channels/{name}/generate/ waits on the model server for up to
# SIGNOFF_SERVING_TIMEOUT (120 s); the worker timeout must be longer than that.
timeout = int(os.environ.get("SIGNOFF_WEB_TIMEOUT", 180))
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then (guards against slow leaks); the jitter staggers restarts.
max_requests = int(os.environ.get("SIGNOFF_WEB_MAX_REQUESTS", 2000))
max_requests_jitter = max_requests // 10

# Proxies allowed to set X-Forwarded-* (gunicorn's own default also reads this variable).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs to stdout/stderr: systemd's journal or the process manager collects them, like
# Django's own log lines (LOGGING in config/settings/base.py writes to the console).
accesslog = os.environ.get("SIGNOFF_WEB_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
capture_output = False

# The app is loaded by each worker after the fork (no preload): database connections and
# Redis pools are never shared between processes.
preload_app = False
proc_name = "signoff-web"

# gunicorn >= 25 opens a control socket (gunicornc); under systemd, RuntimeDirectory= gives it
# a private place ($RUNTIME_DIRECTORY) instead of the service user's home. Older gunicorn
# ignores the setting.
if os.environ.get("RUNTIME_DIRECTORY"):
    control_socket = os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "gunicorn.ctl")
