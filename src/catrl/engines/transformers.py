"""An in-process HF model as an engine: the policy a CaT-RL run trained (merged directory, or base
directory plus LoRA adapter), so it can be evaluated by the same code as every other engine.

Batched `generate` with left padding through transformers' `generate`; greedy when temperature
is 0. Its identity hashes the weight files, so the call cache never mixes two checkpoints. It does
not score continuations (use llama.cpp or vLLM for min-PPL and mutual predictability).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from catrl.engines.base import OnResult
from catrl.errors import EngineError
from catrl.precision import resolve_dtype, torch_dtype
from catrl.types import ChatRequest, Completion, Sampling, ScoredContinuation


def _fingerprint(*dirs: Path) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(d.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class TransformersEngine:
    supports_logprobs = False
    supports_scoring = False

    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None, batch_size: int = 16,
                 dtype: str = "auto", threads: int | None = None, timeout_s: float | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_dir = Path(model_dir)
        self.tok = AutoTokenizer.from_pretrained(str(self.model_dir), padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.dtype = resolve_dtype(dtype)
        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch_dtype(self.dtype))
        dirs = [self.model_dir]
        if adapter_dir:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter_dir)).merge_and_unload()
            dirs.append(Path(adapter_dir))
        self.model.eval()
        self._end_ids = {self.tok.eos_token_id, self.tok.pad_token_id}
        self.batch_size, self.timeout_s = batch_size, timeout_s
        self.identity = f"transformers:{self.model_dir.name}:{_fingerprint(*dirs)}:{self.dtype}"  # bf16 and fp32 decode differently

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        import torch

        flat = [(i, r) for i, r in enumerate(requests) for _ in range(n)]
        texts: list[list[Completion]] = [[] for _ in requests]
        torch.manual_seed(sampling.seed)
        for start in range(0, len(flat), self.batch_size):
            part = flat[start : start + self.batch_size]
            prompts = [self.tok.apply_chat_template(r.to_list(), add_generation_prompt=True, tokenize=False) for _, r in part]
            enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            kw = {"do_sample": False} if sampling.temperature == 0 else {
                "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k or None}
            t0 = time.monotonic()
            with torch.no_grad():
                out = self.model.generate(**enc, max_new_tokens=sampling.max_tokens, pad_token_id=self.tok.pad_token_id,
                                          max_time=self.timeout_s, **kw)
            if self.timeout_s and time.monotonic() - t0 > self.timeout_s:
                raise EngineError(f"{self.identity}: generation exceeded its {self.timeout_s:.0f} s timeout")
            width = enc["input_ids"].shape[1]
            for row, (i, _) in enumerate(part):
                ids = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(ids) if t in self._end_ids), None)
                body = ids if cut is None else ids[:cut]
                text = self.tok.decode(body, skip_special_tokens=True)
                for s in sampling.stop:
                    if s in text:
                        text, cut = text[: text.index(s)], 0
                prompt_tokens = int(enc["attention_mask"][row].sum())
                texts[i].append(Completion(text, "stop" if cut is not None else "length", prompt_tokens, len(body)))
                if on_result and len(texts[i]) == n:
                    on_result(i, texts[i])
        return texts

    def score(self, requests: Sequence[ChatRequest], continuations: Sequence[str]) -> list[ScoredContinuation]:
        raise EngineError(f"{self.identity} does not score continuations")

    def close(self) -> None:
        self.model = None
