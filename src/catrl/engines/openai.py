"""Any OpenAI-compatible chat server: vLLM, SGLang, llama.cpp's server, Ollama, OpenAI.

Async with bounded concurrency; retries with exponential backoff on 429, 5xx, timeouts and
dropped connections, then an EngineError naming the server and the request. A 400 that says the
request does not fit the server's context ends that request alone as n `prompt_too_long`
completions, as in the embedded engine (not cached, flagged downstream). n samples are asked
for natively; where a server returns fewer choices than asked (it lacks `n`), the rest are
fanned out as separate requests with seeds seed+1, seed+2, ...

`base_url` may list several replicas of one model, comma-separated: each attempt goes to the
least-loaded healthy replica (or round robin), a failing replica is taken out for a growing
cooldown and retried later, and a retry after a failure goes to another replica (failover).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from catrl.engines.balancer import Balancer
from catrl.engines.base import OnResult
from catrl.errors import EngineError
from catrl.types import ChatRequest, Completion, Sampling, ScoredContinuation, TokenLogprob

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# how servers word a 400 for a prompt (plus max_tokens) that does not fit their context: OpenAI and
# llama-cpp-python (code context_length_exceeded), llama.cpp's server (exceed_context_size_error),
# vLLM ("maximum context length", "maximum model length"), SGLang ("the model's context length")
CONTEXT_OVERFLOW = ("context_length_exceeded", "exceed_context_size", "exceeds the available context size",
                    "context length", "maximum model length")


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 16
    timeout_s: float = 120.0  # one HTTP call
    connect_timeout_s: float = 5.0
    max_retries: int = 5
    backoff_s: float = 0.5  # first wait; doubles each retry, with jitter
    max_backoff_s: float = 8.0
    send_top_k: bool = True  # vLLM, SGLang, llama.cpp accept top_k; OpenAI itself does not
    balance: str = "least_loaded"  # or "round_robin", across comma-separated base URLs
    health_check: bool = True  # with several replicas: GET /models on each before a batch

    @property
    def urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.base_url.split(",") if u.strip()]

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None, **kw: Any) -> OpenAIConfig:
        url = base_url or os.environ.get("CATRL_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        name = model or os.environ.get("CATRL_MODEL")
        if not url:
            raise EngineError("no server given: pass --base-url or set CATRL_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        if not name:
            raise EngineError(f"no model name for server {url}: pass --model or set CATRL_MODEL")
        key = api_key or os.environ.get("CATRL_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return cls(base_url=",".join(u.strip().rstrip("/") for u in url.split(",") if u.strip()), model=name, api_key=key, **kw)


class OpenAIEngine:
    supports_logprobs = True
    supports_scoring = False

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self.identity = f"openai:{','.join(sorted(config.urls))}|{config.model}"
        self.balancer = Balancer(config.urls, config.balance)
        self._native_n: bool | None = None  # learned from the first reply with n > 1

    # -- public sync API -------------------------------------------------------------------
    def generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1, on_result: OnResult | None = None
    ) -> list[list[Completion]]:
        return _run_sync(self.agenerate(requests, sampling, n, on_result))

    def score(self, requests: Sequence[ChatRequest], continuations: Sequence[str]) -> list[ScoredContinuation]:
        raise EngineError(
            f"{self.identity}: OpenAI-compatible chat servers do not return prompt logprobs here; "
            "score with the embedded llama.cpp engine (--model NAME|PATH.gguf)"
        )

    def close(self) -> None:
        pass

    # -- async core -------------------------------------------------------------------------
    async def agenerate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1, on_result: OnResult | None = None
    ) -> list[list[Completion]]:
        sem = asyncio.Semaphore(self.config.concurrency)
        timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.config.concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers()) as client:
            if self.config.health_check and len(self.balancer.replicas) > 1:
                await self.check_health(client)

            async def one(i: int) -> list[Completion]:
                comps = await self._samples(client, sem, requests[i], sampling, n)
                if on_result:
                    on_result(i, comps)
                return comps

            return list(await asyncio.gather(*(one(i) for i in range(len(requests)))))

    async def check_health(self, client: httpx.AsyncClient) -> list[dict]:
        """Probe every replica (GET /models); an unreachable one is taken out until its cooldown ends."""

        async def probe(rep) -> None:
            try:
                ok = (await client.get(f"{rep.url}/models", timeout=self.config.connect_timeout_s)).status_code == 200
            except (httpx.TimeoutException, httpx.TransportError):
                ok = False
            if not ok:
                log.warning("replica %s failed its health check", rep.url)
                self.balancer.mark_down(rep)

        await asyncio.gather(*(probe(r) for r in self.balancer.replicas))
        return self.balancer.status()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    async def _samples(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, req: ChatRequest, sampling: Sampling, n: int
    ) -> list[Completion]:
        comps: list[Completion] = []
        if self._native_n is not False or n == 1:
            async with sem:
                comps = await self._call(client, req, sampling, n)
            if comps and comps[0].finish_reason == "prompt_too_long":
                return comps  # n of them, whatever the server does with n: learn nothing from it
            if n > 1 and self._native_n is None:
                self._native_n = len(comps) >= n
                if not self._native_n:
                    log.info("%s returned %d of %d choices: fanning out n", self.config.base_url, len(comps), n)
        rest = range(len(comps), n)

        async def extra(k: int) -> list[Completion]:
            async with sem:
                return await self._call(client, req, _with_seed(sampling, sampling.seed + k), 1)

        for more in await asyncio.gather(*(extra(k) for k in rest)):
            comps.extend(more)
        return comps[:n]

    def _body(self, req: ChatRequest, sampling: Sampling, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": req.to_list(),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
            "n": n,
        }
        if self.config.send_top_k and sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 1  # some servers (llama-cpp-python's) return none without it
        return body

    async def _call(self, client: httpx.AsyncClient, req: ChatRequest, sampling: Sampling, n: int) -> list[Completion]:
        body = self._body(req, sampling, n)
        last = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after: float | None = None
            rep = self.balancer.acquire()
            where = f"server {rep.url} (model {self.config.model}), request {req.id or '<no id>'}"
            healthy = False
            try:
                resp = await client.post(f"{rep.url}/chat/completions", json=body)
                healthy = resp.status_code < 500
                if resp.status_code == 200:
                    return _parse_choices(resp.json(), n, where)
                last = f"{rep.url}: HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code == 400 and context_overflow(resp.text):
                    log.warning("%s: does not fit the server's context, ends as prompt_too_long (%s)", where, resp.text[:200])
                    return [Completion.prompt_too_long(0, sampling.logprobs) for _ in range(n)]
                if resp.status_code not in RETRY_STATUS:
                    raise EngineError(f"{where} failed: {last}")
                retry_after = _retry_after(resp)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{rep.url}: {type(e).__name__}: {e}"
            except ValueError as e:  # JSON decode of a truncated body
                last = f"{rep.url}: bad JSON reply: {e}"
            finally:
                self.balancer.release(rep, ok=healthy)
            if attempt < self.config.max_retries:
                wait = min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                if len(self.balancer.replicas) > 1 and retry_after is None:
                    wait = min(wait, self.config.backoff_s)  # fail over to another replica at once
                await asyncio.sleep(max(wait, retry_after or 0.0))
        raise EngineError(f"server {self.config.base_url} (model {self.config.model}), request {req.id or '<no id>'} "
                          f"failed after {self.config.max_retries + 1} attempts: {last}")


def context_overflow(body: str) -> bool:
    """Whether a 400's body says the request does not fit the server's context (CONTEXT_OVERFLOW)."""
    text = body.lower()
    return any(marker in text for marker in CONTEXT_OVERFLOW)


def _with_seed(s: Sampling, seed: int) -> Sampling:
    d = s.to_dict()
    d["seed"] = seed
    return Sampling.from_dict(d)


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return min(60.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


def _parse_choices(data: dict[str, Any], n: int, where: str) -> list[Completion]:
    try:
        choices = data["choices"]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        total_completion = int(usage.get("completion_tokens", 0))
        out = []
        for ch in choices:
            content = (ch.get("logprobs") or {}).get("content") if ch.get("logprobs") else None
            lps = [TokenLogprob(t["token"], float(t["logprob"])) for t in content] if content else None
            ntok = len(lps) if lps is not None else (total_completion // max(1, len(choices)))
            out.append(
                Completion(
                    text=ch["message"].get("content") or "",
                    finish_reason=ch.get("finish_reason") or "stop",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=ntok,
                    logprobs=lps,
                )
            )
        return out
    except (KeyError, TypeError) as e:
        raise EngineError(f"{where}: unexpected reply shape ({e!r}): {str(data)[:300]}") from None


def _run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]
