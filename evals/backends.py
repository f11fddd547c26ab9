"""Judge backends: a local transformers model, or any OpenAI-compatible HTTP endpoint.

Both answer `complete(conversations) -> texts` for a batch of chat conversations; the
local one can also compare the probabilities of answer options (`option_logprobs`). The
OpenAI backend reads its API key from the environment variable named in the spec at call
time and never stores it; it retries 429/5xx/timeouts/malformed replies with backoff.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

Conversation = list[dict[str, str]]


class BackendError(RuntimeError):
    """A judge call that failed after its retries (recorded, the eval goes on)."""


class Backend(Protocol):
    identity: str  # what the judge is (part of the judge-cache key)
    calls: int  # requests made (cache hits make none)

    def complete(self, conversations: list[Conversation]) -> list[str | BackendError]: ...


class LocalBackend:
    """A causal LM on this machine (hub id or local folder), batched greedy generation."""

    def __init__(
        self,
        path: str,
        *,
        max_new_tokens: int = 32,
        batch_size: int = 8,
        loaded: tuple[Any, Any, str] | None = None,
    ) -> None:
        """`path`: a model folder or hub id; `loaded`: (model, tokenizer, identity) instead
        (a judge trained by a stage of the run)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available()
        if loaded is not None:
            self.model, self.tokenizer, identity = loaded
            self.identity = f"stage:{identity}"
        else:
            self.identity = f"local:{path}"
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.bfloat16 if cuda else torch.float32
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.model.eval()
        if cuda:
            self.model = self.model.to("cuda")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.calls = 0

    def _texts(self, conversations: list[Conversation]) -> list[str]:
        if getattr(self.tokenizer, "chat_template", None):
            return [
                str(
                    self.tokenizer.apply_chat_template(
                        c, tokenize=False, add_generation_prompt=True
                    )
                )
                for c in conversations
            ]
        return ["\n\n".join(m["content"] for m in c) + "\n" for c in conversations]

    def _batches(self, texts: list[str]) -> Iterator[Any]:
        """Tokenised, left-padded batches of `texts` on the model's device."""
        for start in range(0, len(texts), self.batch_size):
            yield self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.model.device)

    def complete(self, conversations: list[Conversation]) -> list[str | BackendError]:
        import torch

        out: list[str | BackendError] = []
        for enc in self._batches(self._texts(conversations)):
            with torch.no_grad():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            self.calls += len(ids)
            new = ids[:, enc["input_ids"].shape[1] :]
            out += list(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out

    def option_logprobs(
        self, conversations: list[Conversation], prefix: str, options: list[str]
    ) -> list[list[float]]:
        """log P(option | conversation + prefix) for each option (first token of each)."""
        import torch

        texts = [t + prefix for t in self._texts(conversations)]
        option_ids = [
            self.tokenizer(" " + o, add_special_tokens=False)["input_ids"][0] for o in options
        ]
        out = []
        for enc in self._batches(texts):
            with torch.no_grad():
                logits = self.model(**enc).logits[:, -1].float()
            self.calls += len(logits)
            logp = torch.log_softmax(logits, dim=-1)
            out += [[float(row[i]) for i in option_ids] for row in logp]
        return out


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible endpoint (vLLM, TGI, a hosted API)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "",
        concurrency: int = 4,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_tokens: int = 64,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.identity = f"openai:{base_url.rstrip('/')}:{model}"
        self.api_key_env = api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            print(
                f"warning: judge backend {base_url}: ${api_key_env} is not set; requests go "
                "without an API key (export it, or drop api_key_env for a server without one)",
                file=sys.stderr,
            )
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, conversations: list[Conversation]) -> list[str | BackendError]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, conversations))

    def _one(self, messages: Conversation) -> str | BackendError:

        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": 0.0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._wait(attempt, last))
            with self._lock:
                self.calls += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after:
                    last += f" retry-after {retry_after}"
                if exc.code in (408, 409, 429) or exc.code >= 500:
                    continue
                return BackendError(f"{self.url}: {last} (not retried)")
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            try:
                content = json.loads(raw)["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not text")
                return content
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"malformed reply ({type(exc).__name__}: {raw[:80]!r})"
                continue
        return BackendError(f"{self.url}: gave up after {self.max_retries + 1} tries: {last}")

    def _wait(self, attempt: int, last: str) -> float:
        if "retry-after" in last:
            try:
                return min(float(last.rsplit(" ", 1)[1]), 30.0)
            except ValueError:
                pass
        return float(self.backoff_s * 2 ** (attempt - 1))
