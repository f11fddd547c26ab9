"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests.

It serves the tiny model's greedy completions in the OpenAI chat format. A script of
faults (`"429"`, `"slow"`, `"malformed"`, `"500"`) is consumed one per request before
normal service resumes, and `fixed` replaces the model's text (to test verdict parsing).
Every request is recorded (path, headers, body).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer:
    def __init__(self, model_path: str, slow_s: float = 3.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.script: list[str] = []
        self.fixed: Any = None  # str, or a function(messages) -> str
        self.requests: list[dict[str, Any]] = []
        self.slow_s = slow_s
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    fault = server.script.pop(0) if server.script else "ok"
                if fault == "slow":
                    time.sleep(server.slow_s)
                if fault in ("429", "500"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                if fault == "malformed":
                    payload = b"<html>upstream error</html>"
                else:
                    content = server.answer(body["messages"], body.get("max_tokens", 32))
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        if self.fixed is not None:
            return str(self.fixed(messages) if callable(self.fixed) else self.fixed)
        import torch

        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with self.lock, torch.no_grad():  # one generation at a time
            out = self.model.generate(
                **ids,
                max_new_tokens=min(max_tokens, 16),
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return str(
            self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
