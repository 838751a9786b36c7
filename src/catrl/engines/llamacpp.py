"""The embedded engine: a GGUF model on CPU through llama-cpp-python, no network, no GPU.

All samples of all requests are decoded together: each (request, sample) pair is one llama.cpp
sequence with its own KV stream; a request's prompt is prefilled once and its KV copied to its
siblings; every step then decodes one token of every live sequence in a single `llama_decode`.
New requests are admitted as sequences finish (continuous batching). Sampling runs in C with one
seeded sampler chain per sequence, whose seed depends only on (seed, sample index). One extra
sequence, the stash, keeps the KV of the last long prompt: a prompt that starts the same way (a
judge asked criterion after criterion about one response; mutual predictability's contexts) copies
that prefix instead of recomputing it, in generate() and in score().

Determinism: with separate KV streams and weight repacking off, a sequence's numbers do not depend
on its batch mates in the batches we measured (identical logprobs alone and beside 1-6 other
sequences, on SmolLM2 and Qwen2.5-1.5B), so a resumed run reproduces an uninterrupted one. A unified
KV cache and repacked weights both break that. It is not exact for every batch size: with 64
sequences of the 1.5B model, about 1 sample in 10 matched its one-at-a-time decode token for token
(llama.cpp picks other CPU kernels at other shapes). The call cache makes reruns exact regardless.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from catrl import models
from catrl.engines.base import OnResult
from catrl.errors import EngineError, InputError
from catrl.types import ChatRequest, Completion, Sampling, ScoredContinuation, TokenLogprob

log = logging.getLogger(__name__)

_quiet_installed = False


def _silence_llama_logs() -> None:
    """llama.cpp logs every load to stderr; route it to nowhere unless CATRL_LLAMA_VERBOSE is set."""
    global _quiet_installed
    if _quiet_installed or os.environ.get("CATRL_LLAMA_VERBOSE"):
        return

    @llama_cpp.llama_log_callback
    def _noop(level, text, user_data):  # noqa: ARG001
        return None

    llama_cpp.llama_log_set(_noop, ctypes.c_void_p(0))
    globals()["_noop_ref"] = _noop  # keep the callback alive
    _quiet_installed = True


@dataclass
class _Seq:
    """One live sequence: sample `j` of request `r`."""

    r: int
    j: int
    slot: int
    sampler: object
    pos: int
    tokens: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish: str | None = None
    eog: int | None = None  # the end-of-generation token that ended it
    text_len: int = 0  # bytes already checked for stop strings


@dataclass
class _Group:
    """The samples of one request admitted together: their prompt is prefilled once, then copied."""

    r: int
    seqs: list[_Seq]
    prompt: list[int]


MIN_PREFIX_REUSE = 64  # tokens; below this a prefill is cheaper than copying a KV stream
KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}  # KV cache element types


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def sample_seed(seed: int, j: int) -> int:
    """Per-sample seed: a function of (seed, sample index) only."""
    h = hashlib.blake2b(f"{seed}:{j}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little")


def file_sha256(path: Path) -> str:
    """sha256 of a GGUF, memoized next to nothing: keyed by path, size and mtime in the cache dir."""
    st = path.stat()
    memo = models.models_dir() / ".hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    known[key] = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    except OSError:
        pass
    return known[key]


class LlamaCppEngine:
    supports_logprobs = True
    supports_scoring = True

    def __init__(
        self,
        model: str,
        *,
        max_seqs: int = 32,
        n_ctx_seq: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        timeout_s: float | None = None,
        flash_attn: bool | None = None,
        repack: bool = False,
        kv_type: str = "f16",
        lora_path: str | Path | None = None,
        lora_scale: float = 1.0,
    ):
        """`model`: an embedded model name or a GGUF path. Up to `max_seqs` sequences decode together,
        each with its own KV stream of `n_ctx_seq` tokens (prompt + completion). `timeout_s` bounds one
        generate/score call. `repack` turns on llama.cpp's weight repacking: a few percent faster, but
        then a sequence's numbers depend on how many others share its batch, so samples are no longer
        the same whatever else is decoded with them. `flash_attn` (None = llama.cpp's choice, on for
        CPU) was measured both ways. After short prompts off was slower (2.88x vs 3.35x over sequential)
        and made score() drift from generate()'s logprobs, without making large batches bit-identical.
        After a ~2,600-token anchor prompt off decoded 32 samples 1.43x faster (35.5 against 24.9 tok/s,
        bench/kv_cache.py): an engine that reads only long prompts (an anchor of its own) gains from off.
        Off changes the numbers, so it is part of the identity. `lora_path`: a llama.cpp LoRA GGUF
        (catrl.lora_gguf.adapter_to_gguf makes one from a trained PEFT adapter) applied on top of the
        base weights at `lora_scale`; its hash and the scale join the identity. `kv_type`
        "q8_0" halves the KV cache's memory (65 streams of 4,096 tokens take ~7.6 GB in f16 for the
        1.5B model), for machines short of RAM. It is not faster here: on this project's 2-core CPU,
        32 samples after a 2,618-token anchor prompt decoded at 27.8 tok/s against 32.8 for f16, and
        the prompt went in at 56 against 102 tok/s. Its numbers differ, so it is part of the identity."""
        if kv_type not in KV_TYPES:
            raise InputError(f"kv_type must be one of {sorted(KV_TYPES)}, not {kv_type!r}")
        _silence_llama_logs()
        self.path = models.resolve(model)
        sha = models.REGISTRY[model].sha256 if model in models.REGISTRY else file_sha256(self.path)
        self._base_identity = f"llamacpp:{sha}" + ("" if kv_type == "f16" else f":kv-{kv_type}") + (":nofa" if flash_attn is False else "")
        self.identity = self._base_identity
        self.lora_path: Path | None = None
        self.name = model
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        threads = n_threads or int(os.environ.get("CATRL_THREADS", "0")) or (os.cpu_count() or 1)

        mparams = llama_cpp.llama_model_default_params()
        mparams.use_extra_bufts = repack
        self._model = internals.LlamaModel(path_model=str(self.path), params=mparams, verbose=False)
        self.vocab = self._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        max_seqs = max(1, min(max_seqs, llama_cpp.llama_max_parallel_sequences() - 1))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx_seq * (max_seqs + 1)  # one more stream: the prefix stash
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = max_seqs + 1
        cparams.kv_unified = False  # one KV stream per sequence: attention never spans batch mates
        if flash_attn is not None:
            cparams.flash_attn_type = int(flash_attn)
        cparams.type_k = cparams.type_v = KV_TYPES[kv_type]
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._lora = None
        if lora_path is not None:
            self.set_lora(lora_path, lora_scale)
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx.ctx)
        self.n_ctx_seq = self.n_ctx // (max_seqs + 1)
        self._stash = max_seqs  # sequence id holding the last long prompt, for prefix reuse
        self.n_batch = n_batch
        self.max_seqs = max_seqs
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, max_seqs)
        self._exp_buf: np.ndarray | None = None  # scratch for _output_logsumexp
        self._formatter = self._chat_formatter()
        self._piece_buf = ctypes.create_string_buffer(256)
        self._open_samplers: dict[int, object] = {}
        self.prefix_tokens_reused = 0  # prompt tokens not recomputed thanks to the stash (all calls)
        # one (kind, tokens in the batch, seconds) row per llama_decode, kind "prefill" or "decode": lets a
        # benchmark split wall time into prompt processing, full-batch decoding and the small-batch tail
        self.decode_log: list[tuple[str, int, float]] = []

    def set_lora(self, lora_path: str | Path | None, lora_scale: float = 1.0) -> None:
        """Apply a llama.cpp LoRA GGUF on top of the base weights (None: the base model again), replacing
        the one applied before. The base stays loaded, so a trainer can swap in its adapter after every
        optimizer step for the price of reading the adapter. The identity follows the adapter's bytes."""
        with self._lock:
            path = Path(lora_path).expanduser() if lora_path is not None else None
            new = None
            if path is not None:
                if not path.is_file():
                    raise InputError(f"{path}: LoRA GGUF not found")
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                new = llama_cpp.llama_adapter_lora_init(self._model.model, str(path).encode())
                if not new:
                    raise InputError(f"{path}: llama.cpp could not load this LoRA for {self.path.name} (CATRL_LLAMA_VERBOSE=1 says why)")
                adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(new)
                rc = llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(lora_scale))
            else:
                rc = llama_cpp.llama_set_adapters_lora(self._ctx.ctx, None, 0, None)
            if rc != 0:
                if new:
                    llama_cpp.llama_adapter_lora_free(new)
                raise EngineError(f"{self._base_identity}: llama.cpp refused to attach the LoRA {path}")
            if self._lora:  # detached above; its memory goes now
                llama_cpp.llama_adapter_lora_free(self._lora)
            self._lora, self.lora_path = new, path
            self.identity = self._base_identity + (f":lora-{digest}" + ("" if lora_scale == 1.0 else f"x{lora_scale:g}") if path else "")

    # -- templates and tokens ----------------------------------------------------------------
    def _chat_formatter(self) -> Jinja2ChatFormatter:
        meta = self._model.metadata()
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise InputError(f"{self.path}: the GGUF has no tokenizer.chat_template; catrl needs a chat model")
        eos = self._model.token_eos()
        bos = self._model.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self._model.token_get_text(eos) if eos >= 0 else "",
            bos_token=self._model.token_get_text(bos) if bos >= 0 else "",
            stop_token_ids=[eos],
        )

    def render(self, req: ChatRequest) -> str:
        """The prompt text the model's own chat template makes of a request."""
        return self._formatter(messages=req.to_list()).prompt

    def tokenize_prompt(self, req: ChatRequest) -> list[int]:
        return self._model.tokenize(self.render(req).encode(), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text under this model's tokenizer (for length limits and penalties)."""
        return len(self._model.tokenize(text.encode(), add_bos=False, special=False))

    def _piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        return self._piece_buf.raw[:n] if n > 0 else b""

    def _logits(self, idx: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _output_logsumexp(self, n_out: int, block: int = 64) -> np.ndarray:
        """The softmax denominator (log-sum-exp) of each of the last decode's `n_out` output rows, a
        block of rows per numpy pass: per token in float64 it cost ~4x as much, a noticeable share of
        a 64-sequence decode step when logprobs are on (min-PPL's rollouts)."""
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx.ctx), shape=(n_out, self.n_vocab))
        return self._logsumexp(rows, block)

    def _logsumexp(self, rows: np.ndarray, block: int = 64) -> np.ndarray:
        """Row-wise log-sum-exp: float32 exponentials into one reused buffer, float64 sums."""
        if self._exp_buf is None:
            self._exp_buf = np.empty((block, self.n_vocab), np.float32)
        out = np.empty(len(rows), np.float64)
        for a in range(0, len(rows), block):
            part = rows[a : a + block]
            m = part.max(axis=1, keepdims=True)
            buf = self._exp_buf[: len(part)]
            np.exp(np.subtract(part, m, out=buf), out=buf)
            out[a : a + len(part)] = m[:, 0] + np.log(buf.sum(axis=1, dtype=np.float64))
        return out

    def _log_softmax_at(self, idx: int, token: int) -> float:
        """One row's logprob (a prompt's first sampled token), by the same arithmetic as the batched rows."""
        logits = self._logits(idx)
        return float(logits[token]) - float(self._logsumexp(logits[None])[0])

    # -- generation ----------------------------------------------------------------------------
    def _new_sampler(self, sampling: Sampling, j: int):
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            self._open_samplers[id(chain)] = chain
            return chain
        if sampling.top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(sample_seed(sampling.seed, j)))
        self._open_samplers[id(chain)] = chain
        return chain

    def generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1, on_result: OnResult | None = None
    ) -> list[list[Completion]]:
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        with self._lock:
            try:
                return self._generate(requests, sampling, n, on_result)
            finally:
                for chain in self._open_samplers.values():
                    llama_cpp.llama_sampler_free(chain)
                self._open_samplers.clear()

    def _generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int, on_result: OnResult | None
    ) -> list[list[Completion]]:
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        prompts = [self.tokenize_prompt(r) for r in requests]
        # a completion may use what the prompt leaves of the sequence's context (then finish "context");
        # a prompt that leaves nothing gets n empty "prompt_too_long" completions: one long group must not
        # sink a batch of hundreds (the caller flags it; CachedEngine does not store either outcome)
        limits = [min(sampling.max_tokens, self.n_ctx_seq - len(p)) for p in prompts]
        results: list[list[Completion | None]] = [[None] * n for _ in requests]
        remaining = [n] * len(requests)
        too_long = [r for r in range(len(requests)) if limits[r] < 1]
        if too_long:
            log.warning("%d of %d prompts leave no room in the per-sequence context of %d tokens (raise --ctx); longest %d tokens",
                        len(too_long), len(requests), self.n_ctx_seq, max(len(prompts[r]) for r in too_long))
        for r in too_long:
            results[r] = [Completion.prompt_too_long(len(prompts[r]), sampling.logprobs) for _ in range(n)]
            remaining[r] = 0
            if on_result:
                on_result(r, results[r])  # type: ignore[arg-type]
        pending = [(r, j) for r in range(len(requests)) if limits[r] >= 1 for j in range(n)]  # in admission order
        pending.reverse()
        free_slots = list(range(self.max_seqs))
        groups: list[_Group] = []  # admitted, prompt not fully prefilled yet
        live: list[_Seq] = []
        mem = self._ctx.memory
        llama_cpp.llama_memory_clear(mem, True)
        stash: list[int] = []  # tokens whose KV the stash sequence holds
        stops = [s.encode() for s in sampling.stop]
        batch = self._batch

        def finish(seq: _Seq, reason: str) -> None:
            if reason == "length" and limits[seq.r] < sampling.max_tokens:
                reason = "context"  # the sequence's context filled up before max_tokens
            seq.finish = reason
            llama_cpp.llama_memory_seq_rm(mem, seq.slot, -1, -1)
            llama_cpp.llama_sampler_free(seq.sampler)
            self._open_samplers.pop(id(seq.sampler), None)
            free_slots.append(seq.slot)
            free_slots.sort(reverse=True)  # lowest slot next: keeps live slots contiguous
            text = b"".join(seq.pieces)
            if reason == "stop" and stops:
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text = text[:cut]
            results[seq.r][seq.j] = Completion(
                text=text.decode("utf-8", errors="replace"),
                finish_reason=reason,
                prompt_tokens=len(prompts[seq.r]),
                completion_tokens=len(seq.tokens),
                logprobs=seq.logprobs,
                token_ids=seq.tokens + ([seq.eog] if seq.eog is not None else []),
            )
            remaining[seq.r] -= 1
            if remaining[seq.r] == 0 and on_result:
                on_result(seq.r, results[seq.r])  # type: ignore[arg-type]

        def admit() -> None:
            free_slots.sort(reverse=True)
            while pending and free_slots:
                r = pending[-1][0]
                js: list[int] = []
                while pending and pending[-1][0] == r and len(js) < len(free_slots):
                    js.append(pending.pop()[1])
                seqs = [_Seq(r=r, j=j, slot=free_slots.pop(), sampler=self._new_sampler(sampling, j), pos=len(prompts[r])) for j in js]
                for seq in seqs:
                    if sampling.logprobs:
                        seq.logprobs = []
                groups.append(_Group(r=r, seqs=seqs, prompt=prompts[r]))

        def accept(seq: _Seq, idx: int, lse: np.ndarray | None = None) -> None:
            tok = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx.ctx, idx)
            if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                seq.eog = tok
                finish(seq, "stop")
                return
            if seq.logprobs is not None:
                lp = float(self._logits(idx)[tok]) - float(lse[idx]) if lse is not None else self._log_softmax_at(idx, tok)
                seq.logprobs.append(TokenLogprob(self._piece(tok).decode("utf-8", errors="replace"), lp))
            seq.tokens.append(tok)
            seq.pieces.append(self._piece(tok))
            if stops:
                text = b"".join(seq.pieces)
                if any(s in text[max(0, seq.text_len - 64):] for s in stops):
                    finish(seq, "stop")
                    return
                seq.text_len = len(text)
            if len(seq.tokens) >= limits[seq.r]:
                finish(seq, "length")
                return
            live.append(seq)

        def add(token: int, pos: int, seq_ids: list[int], want_logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = len(seq_ids)
            for k, s in enumerate(seq_ids):
                batch.seq_id[i][k] = s
            batch.logits[i] = want_logits
            batch.n_tokens = i + 1

        def decode(what: str) -> None:
            if deadline and time.monotonic() > deadline:
                raise EngineError(f"{self.identity}: generate timed out after {self.timeout_s}s")
            t0 = time.perf_counter()
            rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
            self.decode_log.append(("prefill" if what == "prompt prefill" else "decode", batch.n_tokens, time.perf_counter() - t0))
            if rc != 0:
                raise EngineError(f"{self.identity}: llama_decode failed with code {rc} during {what} (n_ctx={self.n_ctx})")

        def prefill(g: _Group) -> None:
            """A prompt goes through on its own (one sequence), then its KV is copied to its siblings.

            Prompts that start like the previous long prompt (a judge asked about criterion after
            criterion of one response) reuse its KV from the stash and compute only what differs."""
            first = g.seqs[0].slot
            reuse = min(_common_prefix(stash, g.prompt), len(g.prompt) - 1)
            if reuse >= MIN_PREFIX_REUSE:
                llama_cpp.llama_memory_seq_cp(mem, self._stash, first, -1, -1)  # streams copy whole
                llama_cpp.llama_memory_seq_rm(mem, first, reuse, -1)
                self.prefix_tokens_reused += reuse
            else:
                reuse = 0
            for start in range(reuse, len(g.prompt), self.n_batch):
                batch.n_tokens = 0
                chunk = g.prompt[start : start + self.n_batch]
                for k, tok in enumerate(chunk):
                    add(tok, start + k, [first], start + k == len(g.prompt) - 1)
                decode("prompt prefill")
            if len(g.prompt) >= 2 * MIN_PREFIX_REUSE and g.prompt != stash:
                llama_cpp.llama_memory_seq_rm(mem, self._stash, -1, -1)
                llama_cpp.llama_memory_seq_cp(mem, first, self._stash, -1, -1)
                stash[:] = g.prompt
            for seq in g.seqs[1:]:
                llama_cpp.llama_memory_seq_cp(mem, first, seq.slot, -1, -1)
            for seq in g.seqs:
                accept(seq, batch.n_tokens - 1)

        admit()
        while groups or live:
            while groups:
                prefill(groups.pop(0))
                admit()
            # one token for every live sequence, sorted by slot: runs of consecutive slots form one ubatch
            batch.n_tokens = 0
            stepping = sorted(live, key=lambda q: q.slot)
            live.clear()
            for seq in stepping:
                add(seq.tokens[-1], seq.pos, [seq.slot], True)
                seq.pos += 1
            if not stepping:
                continue
            decode("decoding")
            lse = self._output_logsumexp(len(stepping)) if sampling.logprobs else None  # every token of this step has logits
            for i, seq in enumerate(stepping):
                accept(seq, i, lse)
            admit()
        return [list(rs) for rs in results]  # type: ignore[misc]

    # -- scoring -------------------------------------------------------------------------------
    def score(self, requests: Sequence[ChatRequest], continuations: Sequence[str]) -> list[ScoredContinuation]:
        """Logprob of each continuation token given the chat prompt (teacher forcing)."""
        with self._lock:
            mem = self._ctx.memory
            llama_cpp.llama_memory_clear(mem, True)
            stash: list[int] = []
            try:
                return [self._score_one(r, c, stash) for r, c in zip(requests, continuations, strict=True)]
            finally:
                llama_cpp.llama_memory_clear(mem, True)

    def _score_one(self, req: ChatRequest, continuation: str, stash: list[int]) -> ScoredContinuation:
        """Teacher forcing in sequence 0. A prefix shared with the previous scored text (mutual
        predictability scores each rollout after the others; sifting scores many pieces after one
        prompt) is copied from the stash, not recomputed."""
        prompt = self.tokenize_prompt(req)
        cont = self._model.tokenize(continuation.encode(), add_bos=False, special=False)
        tokens = prompt + cont
        if len(tokens) > self.n_ctx_seq:
            raise InputError(f"request {req.id or '<no id>'}: {len(tokens)} tokens exceed the per-sequence context of {self.n_ctx_seq}")
        mem = self._ctx.memory
        batch = self._batch
        out: list[TokenLogprob] = []
        first_pred = len(prompt) - 1  # logits at position p predict token p+1
        reuse = min(_common_prefix(stash, tokens), first_pred)
        llama_cpp.llama_memory_seq_rm(mem, 0, -1, -1)
        if reuse >= MIN_PREFIX_REUSE:
            llama_cpp.llama_memory_seq_cp(mem, self._stash, 0, -1, -1)
            llama_cpp.llama_memory_seq_rm(mem, 0, reuse, -1)
            self.prefix_tokens_reused += reuse
        else:
            reuse = 0
        for start in range(reuse, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            batch.n_tokens = len(chunk)
            for k, tok in enumerate(chunk):
                p = start + k
                batch.token[k] = tok
                batch.pos[k] = p
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = 0
                batch.logits[k] = first_pred <= p < len(tokens) - 1
            rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
            if rc != 0:
                raise EngineError(f"{self.identity}: llama_decode failed with code {rc} while scoring")
            wanted = [k for k in range(len(chunk)) if batch.logits[k]]
            lse = self._output_logsumexp(len(wanted)) if wanted else None  # output rows come in batch order
            for j, k in enumerate(wanted):
                nxt = tokens[start + k + 1]
                lp = float(self._logits(k)[nxt]) - float(lse[j])  # type: ignore[index]
                out.append(TokenLogprob(self._piece(nxt).decode("utf-8", errors="replace"), lp))
        if len(prompt) > MIN_PREFIX_REUSE or len(tokens) >= 2 * MIN_PREFIX_REUSE:  # many short continuations of one prompt (catrl.sift) then cost only their own tokens
            llama_cpp.llama_memory_seq_rm(mem, self._stash, -1, -1)
            llama_cpp.llama_memory_seq_cp(mem, 0, self._stash, -1, -1)
            stash[:] = tokens
        return ScoredContinuation(tokens=out, prompt_tokens=len(prompt))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None) is not None:
            self._ctx.close()
            self._ctx = None
        if getattr(self, "_lora", None):  # after the context that uses it, before the model that owns it
            llama_cpp.llama_adapter_lora_free(self._lora)
            self._lora = None
        if getattr(self, "_model", None) is not None:
            self._model.close()
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
