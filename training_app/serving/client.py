"""The web process's side of the model server: plain HTTP with a timeout, no torch."""

import json
import urllib.error
import urllib.request
from typing import Any


class ServerDown(Exception):
    """The model server did not answer (not running, or too slow)."""


class ServerRefused(Exception):
    """The model server answered with an error (e.g. a tampered artifact)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("detail", f"model server answered {status}"))
        self.status, self.body = status, body


def call(url: str, path: str, body: dict[str, Any] | None, *, timeout: float) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
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
