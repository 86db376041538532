"""A test double of an inference engine's wire protocol: a small real HTTP server that speaks
the OpenAI-compatible endpoints Signoff uses, in vLLM's shapes (`/v1/models`,
`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`, `/v1/chat/completions`) or llama-server's
(`/lora-adapters`, the per-request `lora` field). It is not vLLM nor llama.cpp: it checks the
API key, keeps the adapters it was told to load, answers with a canned text naming the adapter
that answered, and records every request so that tests can assert exactly what Signoff sent.
Shapes follow vLLM's docs (docs/features/lora.md, "Dynamically serving LoRA adapters") and
llama.cpp's tools/server/README.md."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASE = "base-model"


class EngineDouble:
    def __init__(self, *, api_key: str = "engine-key", flavour: str = "vllm", port: int = 0):
        self.api_key = api_key
        self.flavour = flavour
        self.requests: list[dict[str, Any]] = []
        self.adapters: dict[str, str] = {}  # vLLM: name -> path
        self.lora: list[dict[str, Any]] = []  # llama-server: [{id, path, scale}], from --lora
        self.refuse_loads: str | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def admin_calls(self) -> list[tuple[str, Any]]:
        """The POSTs that change what the engine holds, in order."""
        return [
            (r["path"], r["body"])
            for r in self.requests
            if r["method"] == "POST" and r["path"] != "/v1/chat/completions"
        ]

    def chats(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, *, text: bool = False) -> None:
                data = body.encode() if text else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": status}})

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with engine.lock:
                    engine.requests.append(
                        {
                            "method": method,
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                            "body": body,
                        }
                    )
                if self.headers.get("Authorization") != f"Bearer {engine.api_key}":
                    return self._error(401, "Unauthorized", "AuthenticationError")
                route = getattr(self, f"_{engine.flavour}", None)
                return route(method, self.path, body)

            def _vllm(self, method: str, path: str, body: Any) -> None:
                if (method, path) == ("GET", "/v1/models"):
                    models = [{"id": BASE, "object": "model", "root": BASE, "parent": None}]
                    models += [
                        {"id": n, "object": "model", "root": p, "parent": BASE}
                        for n, p in engine.adapters.items()
                    ]
                    return self._send(200, {"object": "list", "data": models})
                if (method, path) == ("POST", "/v1/load_lora_adapter"):
                    if engine.refuse_loads:
                        return self._error(400, engine.refuse_loads, "BadRequestError")
                    if body["lora_name"] in engine.adapters:
                        message = f"The lora adapter '{body['lora_name']}' has already been loaded."
                        return self._error(400, message, "InvalidUserInput")
                    engine.adapters[body["lora_name"]] = body["lora_path"]
                    return self._send(
                        200,
                        f"Success: LoRA adapter '{body['lora_name']}' added successfully.",
                        text=True,
                    )
                if (method, path) == ("POST", "/v1/unload_lora_adapter"):
                    if engine.adapters.pop(body["lora_name"], None) is None:
                        message = f"The lora adapter '{body['lora_name']}' cannot be found."
                        return self._error(404, message, "NotFoundError")
                    return self._send(
                        200,
                        f"Success: LoRA adapter '{body['lora_name']}' removed successfully.",
                        text=True,
                    )
                if (method, path) == ("POST", "/v1/chat/completions"):
                    if body["model"] != BASE and body["model"] not in engine.adapters:
                        return self._error(
                            404, f"The model `{body['model']}` does not exist.", "NotFoundError"
                        )
                    return self._send(200, _completion(body["model"], body))
                return self._error(404, "Not Found", "NotFoundError")

            def _llamacpp(self, method: str, path: str, body: Any) -> None:
                if (method, path) == ("GET", "/lora-adapters"):
                    return self._send(200, engine.lora)
                if (method, path) == ("POST", "/lora-adapters"):
                    for entry in body:
                        engine.lora[entry["id"]]["scale"] = entry["scale"]
                    return self._send(200, {"success": True})
                if (method, path) == ("POST", "/v1/chat/completions"):
                    chosen = [e for e in body.get("lora", []) if e.get("scale")]
                    named = [engine.lora[e["id"]]["path"] for e in chosen]
                    return self._send(200, _completion(",".join(named) or BASE, body))
                return self._error(404, "File Not Found", "not_found_error")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


def _completion(answered_by: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-double",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer from {answered_by}"},
                "logprobs": {"content": [{"token": "a", "logprob": -0.1}] * 3},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def closed_port_url() -> str:
    """The URL of a port nothing listens on: an engine that is down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
