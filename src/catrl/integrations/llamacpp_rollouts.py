"""GRPO rollouts on llama.cpp: TRL's `rollout_func` for a LoRA policy dequantized from a GGUF.

On a CPU, sampling G completions through transformers' `generate` is the largest part of a GRPO
step (45% on this project's 2-core machine, docs/bench/grpo_step.txt run 3); llama.cpp did it 2.3x
faster (run 2). The policy trained in transformers is the GGUF's weights plus a LoRA, and llama.cpp
can run that GGUF with a LoRA applied (catrl.lora_gguf). So after every optimizer step the current
adapter is written out, converted, and swapped into a llama.cpp engine that holds the base weights,
and the next step's groups decode there in one continuous batch. The trainer then scores exactly
the sampled token ids (the vocabularies are the same file's), so the loss is the one TRL computes
for its own rollouts. Only the kernels differ: llama.cpp's quantized matmuls against the trainer's
dequantized weights (0.03 nats per token apart on average in tests/test_lora_gguf.py).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from catrl.errors import InputError
from catrl.grouping import consecutive_runs
from catrl.integrations.trl import prompt_key
from catrl.lora_gguf import adapter_to_gguf
from catrl.types import ChatRequest, Sampling


def step_seed(seed: int, step: int) -> int:
    """A sampling seed per (run seed, optimizer step): a resumed run samples what the first one would have."""
    return int.from_bytes(hashlib.blake2b(f"rollouts:{seed}:{step}".encode(), digest_size=4).digest(), "little")


class LlamaCppRollouts:
    """Callable as TRL's `rollout_func(prompts, trainer)`; one completion per incoming prompt.

    `engine` is a LlamaCppEngine on the GGUF the policy was dequantized from; `base_gguf` that file;
    `workdir` where the adapter of the current step is written and converted (overwritten each step)."""

    def __init__(self, engine: Any, base_gguf: Path, workdir: Path, sampling: Sampling):
        self.engine = engine
        self.base_gguf = Path(base_gguf)
        self.workdir = Path(workdir)
        self.sampling = sampling
        self.synced_step: int | None = None
        self.last_seconds: dict[str, float] = {}  # "sync" (adapter export + convert + load), "generate"

    def sync(self, model: Any, step: int) -> None:
        """Put the trainer's current LoRA into the engine (once per optimizer step)."""
        if self.synced_step == step:
            return
        if not hasattr(model, "peft_config"):
            raise InputError("rollouts: llamacpp needs a LoRA policy (lora_r > 0); full fine-tuning samples with rollouts: transformers")
        adapter_dir = self.workdir / "adapter"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        model.save_pretrained(str(adapter_dir))
        gguf = adapter_to_gguf(adapter_dir, self.base_gguf, self.workdir / "adapter.gguf")
        self.engine.set_lora(gguf)
        self.synced_step = step

    def seconds_metrics(self) -> dict[str, float]:
        """The last step's timings as metrics: with step_time and cat/*_seconds they split the step."""
        return {f"rollouts/{k}_seconds": v for k, v in self.last_seconds.items()}

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        t0 = time.perf_counter()
        step = trainer.state.global_step
        accelerator = getattr(trainer, "accelerator", None)
        self.sync(accelerator.unwrap_model(trainer.model) if accelerator else trainer.model, step)
        t1 = time.perf_counter()
        runs = consecutive_runs([prompt_key(p) for p in prompts])  # TRL repeats each prompt G times in a row
        requests = [as_request(prompts[run[0]]) for run in runs]
        sampling = replace(self.sampling, seed=step_seed(self.sampling.seed, step))
        results: list[list[Any]] = [[] for _ in runs]
        # groups of different sizes cannot share one call's n: one call per distinct size (almost always one)
        for n in sorted({len(run) for run in runs}):
            idx = [i for i, run in enumerate(runs) if len(run) == n]
            for i, comps in zip(idx, self.engine.generate([requests[i] for i in idx], sampling, n=n), strict=True):
                results[i] = comps
        prompt_ids, completion_ids = [], []
        for req, comps in zip(requests, results, strict=True):
            ids = self.engine.tokenize_prompt(req)
            prompt_ids.extend(list(ids) for _ in comps)
            completion_ids.extend(list(c.token_ids) for c in comps)
        self.last_seconds = {"sync": t1 - t0, "generate": time.perf_counter() - t1}
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def as_request(prompt: Any) -> ChatRequest:
    """A TRL conversational prompt (a list of messages) as a chat request."""
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise InputError(f"rollouts: llamacpp takes conversational prompts (lists of role/content messages), got {type(prompt).__name__}")
    return ChatRequest(messages=tuple({"role": m["role"], "content": m["content"]} for m in prompt))
