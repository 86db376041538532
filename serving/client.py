"""The web process's side of the model server: plain HTTP with a timeout, no torch."""

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings


def serving_token() -> str:
    """The secret the web process shows the model server, so that nothing else on the host can
    have a model answer without the answer being recorded and routed into review:
    SIGNOFF_SERVING_TOKEN, or one derived from SECRET_KEY (both processes read the same
    settings, so nothing needs configuring)."""
    configured = settings.SIGNOFF_GOVERNANCE.get("SERVING_TOKEN")
    if configured:
        return str(configured)
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, b"signoff model server", hashlib.sha256).hexdigest()


class ServerDown(Exception):
    """The model server did not answer (not running, or too slow)."""


class ServerRefused(Exception):
    """The model server answered with an error (e.g. a tampered artifact)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("detail", f"model server answered {status}"))
        self.status, self.body = status, body


def call(
    url: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    timeout: float,
    token: str | None = None,
) -> dict[str, Any]:
    """`token`: the secret to show (default `serving_token()`)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method="POST" if data is not None else "GET",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or serving_token()}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        raise ServerRefused(exc.code, payload) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ServerDown(str(getattr(exc, "reason", exc))) from exc
