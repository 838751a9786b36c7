"""`catrl serve`: CaT rewards over HTTP, for any RL stack (custom trainers, OpenRLHF's remote RM).

One ASGI app (FastAPI on uvicorn). Requests queue as groups; one worker drains the queue into
engine batches (up to `max_batch_groups` groups, waiting at most `batch_window_s` for more), so
many small concurrent requests share one batched anchor call. The queue is bounded: beyond
`max_queue_groups` a request gets 503 with Retry-After instead of waiting forever. Bodies are
size-limited (413), malformed ones get 422 naming the field, an engine failure is a 502 for that
batch while the service stays up, and every model call keeps its engine timeout. Bound to loopback
by default; any other address requires a bearer token.

    POST /v1/rewards     {"groups": [{"rollouts": [...], "task": "math"|"freeform", "conversation": [...]?}]}
    POST /get_reward     OpenRLHF remote reward model: {"query": [...], "prompts": [...]} -> {"rewards": [...]}
    GET  /health, GET /metrics (Prometheus text format)
"""

from __future__ import annotations

import asyncio
import json
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from catrl.errors import CatrlError, InputError
from catrl.grouping import consecutive_runs
from catrl.rewards import CaTReward, RubricReward
from catrl.types import RewardRecord

log = logging.getLogger(__name__)

MAX_ROLLOUTS = 64
MAX_GROUPS_PER_REQUEST = 256


class MessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GroupIn(BaseModel):
    rollouts: list[str] = Field(min_length=1, max_length=MAX_ROLLOUTS)
    task: Literal["math", "freeform"] = "math"
    question: str | None = None  # used only by a math reward built with include_question=True
    conversation: list[MessageIn] | None = None  # free-form: what the judge grades against
    id: str | None = None  # names the prompt in the audit log
    gold: str | None = None  # monitoring only: written to the audit log for `catrl audit`, never used by the reward


class RewardsIn(BaseModel):
    groups: list[GroupIn] = Field(min_length=1, max_length=MAX_GROUPS_PER_REQUEST)


class OpenRLHFIn(BaseModel):
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None  # gold labels: ignored (CaT uses none)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_queue_groups: int = 512
    max_batch_groups: int = 32
    batch_window_s: float = 0.02
    max_body_bytes: int = 8 * 1024 * 1024
    retry_after_s: int = 2
    group_size: int | None = None  # OpenRLHF: require runs of exactly this many samples per prompt
    audit_path: Path | None = None  # append one JSONL row per scored group (`catrl audit` reads it)

    def check(self) -> None:
        if not _is_loopback(self.host) and not self.token:
            raise InputError(f"--host {self.host} is not loopback: set a bearer token (--token or CATRL_SERVE_TOKEN)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class QueueFull(Exception):
    pass


@dataclass
class _Job:
    groups: list[GroupIn]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("catrl_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry)
        self.groups = Counter("catrl_groups_scored", "groups scored", ["task"], registry=self.registry)
        self.queue = Gauge("catrl_queue_groups", "groups waiting or being scored", registry=self.registry)
        self.batch = Histogram("catrl_batch_groups", "groups per engine batch", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.latency = Histogram("catrl_request_seconds", "request latency", ["endpoint"], registry=self.registry)


class RewardService:
    """The batching queue in front of the rewards. One worker: the engines are not re-entrant."""

    def __init__(self, math: CaTReward | None, freeform: RubricReward | None, cfg: ServeConfig, metrics: Metrics):
        self.math, self.freeform, self.cfg, self.metrics = math, freeform, cfg, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending_groups = 0
        self.worker: asyncio.Task | None = None

    async def score(self, groups: list[GroupIn]) -> list[RewardRecord]:
        if self.pending_groups + len(groups) > self.cfg.max_queue_groups:
            raise QueueFull()
        for i, g in enumerate(groups):
            reward = self.math if g.task == "math" else self.freeform
            if reward is None:
                raise InputError(f"groups[{i}].task: this service has no {g.task} reward configured")
        self.pending_groups += len(groups)
        self.metrics.queue.set(self.pending_groups)
        job = _Job(groups, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        try:
            return await job.future
        finally:
            self.pending_groups -= len(groups)
            self.metrics.queue.set(self.pending_groups)

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            deadline = time.perf_counter() + self.cfg.batch_window_s
            n = len(jobs[0].groups)
            while n < self.cfg.max_batch_groups:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                jobs.append(job)
                n += len(job.groups)
            await self._score_batch(jobs)

    async def _score_batch(self, jobs: list[_Job]) -> None:
        flat = [(j, k, g) for j, job in enumerate(jobs) for k, g in enumerate(job.groups)]
        self.metrics.batch.observe(len(flat))
        results: dict[tuple[int, int], RewardRecord] = {}
        failed: dict[int, BaseException] = {}
        for task, reward in (("math", self.math), ("freeform", self.freeform)):
            part = [(j, k, g) for j, k, g in flat if g.task == task]
            if not part:
                continue
            try:
                if task == "math":
                    recs = await asyncio.to_thread(reward.score_groups, [g.question for _, _, g in part], [g.rollouts for _, _, g in part])
                else:
                    convs = [[m.model_dump() for m in g.conversation] if g.conversation else "" for _, _, g in part]
                    recs = await asyncio.to_thread(reward.score_groups, convs, [g.rollouts for _, _, g in part])
            except Exception as e:  # an engine failure fails this batch's requests, never the service
                log.warning("scoring a batch of %d %s groups failed: %s", len(part), task, e)
                for j, _, _ in part:
                    failed[j] = e
                continue
            self.metrics.groups.labels(task).inc(len(part))
            for (j, k, _), rec in zip(part, recs, strict=True):
                results[(j, k)] = rec
            if self.cfg.audit_path is not None:
                await asyncio.to_thread(append_audit, self.cfg.audit_path, [g for _, _, g in part], recs)
        for j, job in enumerate(jobs):
            if job.future.done():
                continue
            if j in failed:
                job.future.set_exception(failed[j])
            else:
                job.future.set_result([results[(j, k)] for k in range(len(job.groups))])


def openrlhf_groups(body: OpenRLHFIn, group_size: int | None) -> tuple[list[GroupIn], list[list[int]]]:
    """OpenRLHF sends `query` = prompt + response strings (and `prompts`): strip the prompt, then
    group consecutive samples of one prompt. Returns the groups and the query indices of each."""
    if body.prompts is not None and len(body.prompts) != len(body.query):
        raise InputError(f"prompts: {len(body.prompts)} entries for {len(body.query)} queries")
    prompts = body.prompts or [""] * len(body.query)
    responses = []
    for i, (q, p) in enumerate(zip(body.query, prompts, strict=True)):
        if p and not q.startswith(p):
            raise InputError(f"query[{i}]: does not start with prompts[{i}]")
        responses.append(q[len(p):])
    keys = [p if p else ("unkeyed", i) for i, p in enumerate(prompts)]  # without prompts every query stands alone
    runs = consecutive_runs(keys, group_size, "Send whole groups (n_samples_per_prompt) in one request.")
    labels = body.labels if body.labels is not None and len(body.labels) == len(body.query) else None
    return [GroupIn(rollouts=[responses[i] for i in r], task="math", question=prompts[r[0]] or None,
                    gold=None if labels is None or labels[r[0]] is None else str(labels[r[0]])) for r in runs], runs


class BodyLimit:
    """ASGI middleware, the one place the body limit lives: a declared Content-Length over
    `max_bytes` gets 413 unread; otherwise the body is read up to `max_bytes` (chunked too) and
    handed on whole, or answered 413 as soon as it passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.max_bytes:
            reply = JSONResponse({"detail": f"body of {length} bytes exceeds the limit of {self.max_bytes}"}, status_code=413)
            await reply(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                reply = JSONResponse({"detail": f"body exceeds the limit of {self.max_bytes} bytes"}, status_code=413)
                await reply(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as Starlette expects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def append_audit(path: Path, groups: list[GroupIn], records: list[RewardRecord]) -> None:
    """One row per scored group, in the shape of a CaT-RL run's audit trail (prompt, rollouts, gold, record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for g, rec in zip(groups, records, strict=True):
            prompt = [m.model_dump() for m in g.conversation] if g.conversation else g.question
            row = {"time": time.time(), "task": g.task, "id": g.id, "prompt": prompt, "rollouts": g.rollouts, "gold": g.gold,
                   **rec.to_dict()}
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def create_app(math: CaTReward | None, freeform: RubricReward | None, cfg: ServeConfig) -> FastAPI:
    cfg.check()
    metrics = Metrics()
    service = RewardService(math, freeform, cfg, metrics)

    async def lifespan(app: FastAPI):
        service.worker = asyncio.create_task(service.run())
        yield
        service.worker.cancel()

    app = FastAPI(title="catrl reward service", lifespan=lifespan)
    app.state.service = service

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)  # inside `guard`: auth first, then the body

    @app.middleware("http")
    async def guard(request: Request, call_next):
        endpoint = request.url.path
        t0 = time.perf_counter()
        if cfg.token and endpoint != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {cfg.token}".encode()):
                metrics.requests.labels(endpoint, "401").inc()
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    async def _score(groups: list[GroupIn]) -> list[RewardRecord]:
        try:
            return await service.score(groups)
        except QueueFull:
            raise HTTPException(503, "reward queue is full; retry later", headers={"Retry-After": str(cfg.retry_after_s)}) from None
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        except CatrlError as e:
            raise HTTPException(502, f"engine failure: {e}") from None
        except Exception as e:  # noqa: BLE001 - report, keep serving
            raise HTTPException(502, f"engine failure: {type(e).__name__}: {e}") from None

    @app.post("/v1/rewards")
    async def rewards(body: RewardsIn) -> dict[str, Any]:
        recs = await _score(body.groups)
        return {"results": [{"rewards": r.rewards, "record": r.to_dict()} for r in recs]}

    @app.post("/get_reward")
    async def get_reward(body: OpenRLHFIn) -> dict[str, Any]:
        try:
            groups, runs = openrlhf_groups(body, cfg.group_size)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        recs = await _score(groups)
        rewards = [0.0] * len(body.query)
        for run, rec in zip(runs, recs, strict=True):
            for i, r in zip(run, rec.rewards, strict=True):
                rewards[i] = float(r)
        return {"rewards": rewards, "scores": rewards,
                "extra_logs": {"cat_flagged_groups": [float(bool(r.flags)) for r in recs]}}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        alive = service.worker is not None and not service.worker.done()
        return {"status": "ok" if alive else "worker stopped", "queue_groups": service.pending_groups,
                "tasks": [t for t, r in (("math", math), ("freeform", freeform)) if r is not None]}

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    return app

