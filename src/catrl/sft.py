"""CaT-SFT, the paper's baseline: fine-tune the policy on its own synthesized references.

Input is the JSONL that `catrl label` writes (one row per question: `question`, `reference`, and
for verifiable tasks the reference's `answer`). Each row becomes a prompt-completion pair (the
same prompt template the rollouts were sampled with, the reference as the assistant's reply) and
TRL's SFTTrainer trains LoRA on the completion tokens only. Rows whose reference has no
extractable answer (verifiable task) are skipped and counted. Resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catrl import prompting
from catrl.datasets import iter_records
from catrl.errors import InputError
from catrl.precision import resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class SFTOptions:
    policy: str = "qwen2.5-coder-0.5b"
    output_dir: str = "runs/cat-sft"
    prompt: str = "solve"  # the template the rollouts were sampled with ("raw" for free-form labels)
    epochs: float = 1.0
    learning_rate: float = 1e-4
    batch_size: int = 4
    max_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    dtype: str = "auto"  # auto | bf16 | fp32 (catrl.precision)
    save_steps: int = 20
    max_steps: int = -1
    seed: int = 0


def read_labels(path: Path, prompt: str) -> tuple[list[dict[str, Any]], int]:
    """Prompt-completion rows from a `catrl label` file; (rows, skipped for having no answer)."""
    rows, skipped = [], 0
    if not Path(path).is_file():
        raise InputError(f"{path}: no such labels file (write one with `catrl label`)")
    for where, rec in iter_records(str(path)):
        for key in ("question", "reference"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise InputError(f"{where}: field {key!r} must be a non-empty string (is this `catrl label` output?)")
        if "answer" in rec and rec["answer"] is None:
            skipped += 1
            continue
        user = prompting.render(prompt, question=rec["question"])
        rows.append({"prompt": [{"role": "user", "content": user}],
                     "completion": [{"role": "assistant", "content": rec["reference"]}]})
    if not rows:
        raise InputError(f"{path}: no usable rows (every reference lacks an answer, or the file is empty)")
    return rows, skipped


def sft(labels: Path, opts: SFTOptions) -> Path:
    """Train; returns the merged model directory (the adapter is saved next to it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from catrl.hf_policy import resolve_policy
    from catrl.train import export, last_checkpoint, metrics_callback

    rows, skipped = read_labels(labels, opts.prompt)
    if skipped:
        log.warning("%s: skipped %d rows whose reference has no final answer", labels, skipped)
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy_dir = resolve_policy(opts.policy)
    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    cpu = not torch.cuda.is_available()
    bf16 = resolve_dtype(opts.dtype) == "bf16"
    args = SFTConfig(
        output_dir=str(out), use_cpu=cpu, bf16=bf16 and not cpu, gradient_checkpointing=False,
        num_train_epochs=opts.epochs, max_steps=opts.max_steps, learning_rate=opts.learning_rate,
        per_device_train_batch_size=opts.batch_size, max_length=opts.max_length,
        save_steps=opts.save_steps, save_total_limit=2, logging_steps=1, report_to="none", seed=opts.seed,
        model_init_kwargs={"dtype": "bfloat16" if bf16 else "float32"},
    )
    peft_config = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]) if opts.lora_r else None
    trainer = SFTTrainer(model=str(policy_dir), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config, callbacks=[metrics_callback(out / "metrics.jsonl")])
    ckpt = last_checkpoint(out)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    _, merged = export(trainer, tok, out)
    return merged
