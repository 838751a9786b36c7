"""One place that turns user options into an engine handle (cached unless told otherwise)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from catrl.cache import CallCache
from catrl.engines.base import CachedEngine, Engine
from catrl.models import DEFAULT_MODEL
from catrl.paths import default_call_cache


@dataclass(frozen=True)
class EngineOptions:
    """What picks and tunes an engine. With `base_url` the model is a server's model name."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = None
    # embedded engine
    max_seqs: int = 32
    n_ctx_seq: int = 4096
    threads: int | None = None
    flash_attn: bool | None = None  # None: llama.cpp's choice (on for CPU); False decodes faster after long prompts
    adapter: str | None = None  # a PEFT LoRA directory (converted once, cached) or a llama.cpp LoRA .gguf
    # server engine
    concurrency: int = 16
    max_retries: int = 5
    # both
    timeout_s: float | None = None
    cache_path: Path | None = None
    use_cache: bool = True


def group_context(g: int, max_tokens: int, answer_tokens: int, slack: int = 1024) -> int:
    """Tokens per sequence for an embedded engine that reads whole groups: G rollouts of up to
    `max_tokens` each inside one prompt (the anchor's synthesis, self-selection, USC, mutual
    predictability), plus that call's answer (`answer_tokens`, at least 512) and `slack` for the
    question and the template; rounded up to 256. A smaller context cuts references short (flag
    `reference_context`) or leaves no room at all (`reference_prompt_too_long`)."""
    need = g * (max_tokens + 16) + max(answer_tokens, 512) + slack
    return -(-need // 256) * 256


def open_engine(opts: EngineOptions) -> Engine:
    if opts.base_url and opts.adapter:
        from catrl.errors import InputError

        raise InputError("--adapter applies a LoRA on the embedded engine; a server loads its own (vLLM: --lora-modules)")
    if opts.base_url:
        from catrl.engines.openai import OpenAIConfig, OpenAIEngine

        extra = {"timeout_s": opts.timeout_s} if opts.timeout_s else {}
        cfg = OpenAIConfig.from_env(
            base_url=opts.base_url, model=opts.model, api_key=opts.api_key,
            concurrency=opts.concurrency, max_retries=opts.max_retries, **extra,
        )
        engine: Engine = OpenAIEngine(cfg)
    else:
        from catrl.engines.llamacpp import LlamaCppEngine

        lora = None
        if opts.adapter:
            from catrl.lora_gguf import adapter_gguf_for
            from catrl.models import resolve

            lora = adapter_gguf_for(Path(opts.adapter), resolve(opts.model))
        engine = LlamaCppEngine(
            opts.model, max_seqs=opts.max_seqs, n_ctx_seq=opts.n_ctx_seq, n_threads=opts.threads, timeout_s=opts.timeout_s,
            flash_attn=opts.flash_attn, lora_path=lora,
        )
    if not opts.use_cache:
        return engine
    return CachedEngine(engine, CallCache(opts.cache_path or default_call_cache()))
