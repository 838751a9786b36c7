"""CaT-RL on one machine: TRL's GRPOTrainer with the CaT reward, LoRA, checkpoints and resume.

The policy trains in transformers (an HF directory, made once from an embedded GGUF); the anchor
is a separate frozen engine (the same initial model on llama.cpp, or a server), so the reference
never comes from the weights being trained. Each optimizer step generates `prompts_per_step`
whole groups of G completions and scores them in one reward call (one batched anchor call). A run
directory holds: config.yaml, checkpoint-N/ (every `save_steps`), metrics.jsonl (one row per
step), audit.jsonl (every group's reference, answers and rewards), starts.jsonl (one row per start or
resume: from which step, in which dtype, on which machine and library versions), curves.png, and at the end
adapter/ (LoRA) and merged/ (a plain HF model); with keep_adapter_steps, adapters/step-N/ too. Run the
same command again to resume after a kill.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from catrl import prompting
from catrl.datasets import gold_answer, load_examples
from catrl.engines.factory import EngineOptions, group_context, open_engine
from catrl.errors import InputError
from catrl.hf_policy import policy_gguf
from catrl.precision import resolve_dtype
from catrl.report.plots import plot_curves
from catrl.run_state import check_same_config, restore_state, save_state, state_step
from catrl.time_budget import budget_callback, check_budget
from catrl.train_config import TrainConfig, dump_config
from catrl.types import Sampling

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    resumed_from: int | None
    adapter_dir: Path | None
    merged_dir: Path | None
    curves: Path | None
    stopped: bool = False  # the time budget (max_minutes) ended this start before `steps`: run again to resume
    state_dir: Path | None = None


def prompt_rows(cfg: TrainConfig, count_tokens: Callable[[list[dict]], int]) -> tuple[list[dict[str, Any]], int]:
    """Dataset rows for GRPOTrainer: a conversational `prompt` and, if the data has one, a `gold`
    answer for monitoring. Returns (rows, number dropped for exceeding max_prompt_tokens)."""
    limit = cfg.offset + cfg.limit if cfg.limit is not None else None
    examples = load_examples(cfg.dataset, limit=limit)[cfg.offset :]
    if not examples:
        raise InputError(f"dataset {cfg.dataset!r} has no rows after offset {cfg.offset}")
    rows, dropped = [], 0
    for e in examples:
        if e.messages is not None:
            messages = [dict(m) for m in e.messages]
        else:
            messages = [{"role": "user", "content": prompting.render(cfg.prompt, question=e.question)}]
        if count_tokens(messages) > cfg.max_prompt_tokens:
            dropped += 1
            continue
        row: dict[str, Any] = {"prompt": messages, "id": e.id}
        row["gold"] = gold_answer(cfg.dataset, e.gold) if cfg.task == "math" and e.gold is not None else None
        rows.append(row)
    if not rows:
        raise InputError(f"every prompt of {cfg.dataset!r} is longer than max_prompt_tokens={cfg.max_prompt_tokens}")
    return rows, dropped


def build_reward(cfg: TrainConfig, audit_path: Path):
    """The CaT reward function for TRL, over a frozen anchor engine (or an anchor-free baseline or control)."""
    from catrl.control_rewards import FormatReward, RandomReward
    from catrl.integrations.trl import CaTRewardFunc
    from catrl.rewards import CaTReward, MajorityReward, RubricReward

    free = {"majority": lambda: MajorityReward(match=cfg.match, min_support=cfg.min_support), "random": lambda: RandomReward(p=0.5, seed=cfg.seed), "format": FormatReward}
    if cfg.reward in free:
        return CaTRewardFunc(free[cfg.reward](), num_generations=cfg.g, gold_column="gold", id_column="id", audit_path=audit_path)
    anchor_model = cfg.anchor or (cfg.policy if not Path(cfg.policy).is_dir() else None)
    if anchor_model is None:
        raise InputError("config: field 'anchor' is required when 'policy' is an HF directory (the anchor runs on llama.cpp or a server)")
    anchor = open_engine(EngineOptions(model=anchor_model, base_url=cfg.anchor_base_url, threads=cfg.threads,
                                       max_seqs=max(4, cfg.prompts_per_step * (1 if cfg.task == "math" else cfg.g)),
                                       n_ctx_seq=group_context(cfg.g, cfg.max_completion_tokens, cfg.anchor_max_tokens),
                                       timeout_s=None if cfg.anchor_base_url else cfg.anchor_timeout_s,
                                       flash_attn=cfg.anchor_flash_attn, use_cache=False))
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.anchor_max_tokens, seed=cfg.seed)
    if cfg.task == "math":
        reward = CaTReward(anchor, match=cfg.match, sampling=sampling, estimator=cfg.estimator, min_support=cfg.min_support)
    else:
        judge = anchor
        if cfg.judge or cfg.judge_base_url:
            judge = open_engine(EngineOptions(model=cfg.judge or anchor_model, base_url=cfg.judge_base_url,
                                              threads=cfg.threads, use_cache=False))
        reward = RubricReward(anchor, judge, sampling=sampling, estimator=cfg.estimator, guards=cfg.guards)
    return CaTRewardFunc(reward, num_generations=cfg.g, gold_column="gold", id_column="id", audit_path=audit_path)


def resolve_rollouts(cfg: TrainConfig) -> str:
    """`auto`: llama.cpp where it can run the policy (a GGUF policy with LoRA) and no GPU runs transformers."""
    can = policy_gguf(cfg.policy) is not None and cfg.lora_r > 0
    if cfg.rollouts != "auto":
        if cfg.rollouts == "llamacpp" and not can:
            raise InputError(f"config: field 'rollouts' = 'llamacpp' needs a GGUF policy (embedded name or .gguf) with LoRA (lora_r > 0); "
                             f"policy is {cfg.policy!r}, lora_r {cfg.lora_r}")
        return cfg.rollouts
    return "llamacpp" if can and _no_accelerator() else "transformers"


def build_rollouts(cfg: TrainConfig, out: Path):
    """The llama.cpp rollout function for GRPOTrainer (rollouts: llamacpp)."""
    from catrl.engines.llamacpp import LlamaCppEngine
    from catrl.integrations.llamacpp_rollouts import LlamaCppRollouts

    gguf = policy_gguf(cfg.policy)
    engine = LlamaCppEngine(str(gguf), max_seqs=cfg.g * cfg.prompts_per_step, n_threads=cfg.threads,
                            n_ctx_seq=cfg.max_prompt_tokens + cfg.max_completion_tokens + 16)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.max_completion_tokens, seed=cfg.seed)
    return LlamaCppRollouts(engine, gguf, out / "rollout_lora", sampling)


def grpo_args(cfg: TrainConfig, out: Path):
    from trl import GRPOConfig

    micro = cfg.micro_batch or cfg.g
    bf16 = resolve_dtype(cfg.dtype) == "bf16"
    return GRPOConfig(
        output_dir=str(out),
        use_cpu=_no_accelerator(), bf16=bf16 and not _no_accelerator(),
        gradient_checkpointing=False,
        num_generations=cfg.g,
        # one optimizer step = one generation batch of prompts_per_step whole groups, scored in one reward
        # call, then split into micro-batches of `micro_batch` completions (gradient accumulation)
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=cfg.g * cfg.prompts_per_step // micro,
        max_completion_length=cfg.max_completion_tokens,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
        learning_rate=cfg.learning_rate, beta=cfg.beta, loss_type=cfg.loss_type,
        max_steps=cfg.steps, save_steps=cfg.save_steps, save_strategy="steps", save_total_limit=2,
        logging_steps=1, report_to="none", seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
        model_init_kwargs={"dtype": "bfloat16" if bf16 else "float32"},
        disable_tqdm=False,
    )


def _no_accelerator() -> bool:
    import torch

    return not torch.cuda.is_available()


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint. Trainer writes trainer_state.json last, so a directory
    without a readable one is a save the kill interrupted: skip it."""
    if not out.is_dir():
        return None
    found = []
    for d in out.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if d.is_dir() and step.isdigit():
            try:
                json.loads((d / "trainer_state.json").read_text())
            except (OSError, ValueError):
                log.warning("ignoring the incomplete checkpoint %s", d)
                continue
            found.append((int(step), d))
    return max(found)[1] if found else None


def checkpoint_step(ckpt: Path) -> int:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return int(state["global_step"])


def trim_after_step(path: Path, upto_step: int) -> None:
    """On resume, drop metric and audit rows logged after the checkpoint (those steps are trained again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from the kill
        if (row.get("step") or 0) <= upto_step:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def start_record(cfg: TrainConfig, from_step: int) -> dict[str, Any]:
    """What this start of a run computes with: a run resumed across machines or upgrades says so in starts.jsonl."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from_step": from_step, "dtype": cfg.dtype,
            "rollouts": cfg.rollouts, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "versions": {pkg: ver(pkg) for pkg in ("catrl", "torch", "transformers", "trl", "peft", "llama_cpp_python")}}


def metrics_callback(path: Path, extra: Callable[[], dict[str, float]] | None = None):
    """`extra`: more of the step's metrics, read at logging time (the llama.cpp rollouts' own timings)."""
    from transformers import TrainerCallback

    class MetricsJSONL(TrainerCallback):
        """One JSON row per logging step: TRL's metrics plus the CaT metrics the reward logged."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "train_runtime" not in logs:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs, **(extra() if extra else {})}) + "\n")

    return MetricsJSONL()


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def keep_adapter(ckpt: Path, dest: Path) -> Path | None:
    """Copy a checkpoint's LoRA adapter (the two files PEFT loads) to `dest`, whole or not at all:
    a kill mid-copy leaves only a temporary directory, which the next snapshot replaces."""
    if not all((ckpt / f).is_file() for f in ADAPTER_FILES):
        return None
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ADAPTER_FILES:
        shutil.copy2(ckpt / f, tmp / f)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def kept_adapters(out: Path) -> list[tuple[int, Path]]:
    """The adapter snapshots of a run (keep_adapter_steps), by step."""
    found = [(int(d.name.removeprefix("step-")), d) for d in (out / "adapters").glob("step-*")
             if d.name.removeprefix("step-").isdigit() and all((d / f).is_file() for f in ADAPTER_FILES)]
    return sorted(found)


def state_callback(out: Path, state_dir: Path, config: dict[str, Any]):
    from transformers import TrainerCallback

    class PortableState(TrainerCallback):
        """After every checkpoint, the run's portable state (catrl.run_state) replaces the previous one."""

        def on_save(self, args, state, control, **kwargs):
            manifest = save_state(out / f"checkpoint-{state.global_step}", out, state_dir, config)
            log.info("run state of step %d -> %s (%.1f MB)", manifest["step"], state_dir, manifest["bytes"] / 2**20)

    return PortableState()


def snapshot_callback(out: Path, every: int):
    from transformers import TrainerCallback

    class AdapterSnapshots(TrainerCallback):
        """After a checkpoint of every `every`-th step is saved, keep its adapter: checkpoint rotation
        (two kept) would delete it, and accuracy over training needs the weights of earlier steps."""

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            if step % every == 0 and keep_adapter(out / f"checkpoint-{step}", out / "adapters" / f"step-{step}") is None:
                log.warning("checkpoint-%d has no LoRA adapter to keep", step)

    return AdapterSnapshots()


@dataclass
class Run:
    """A GRPOTrainer wired for CaT, not yet started: what `train` runs and benchmarks time."""

    trainer: Any
    reward: Any  # the CaTRewardFunc
    rollouts: Any  # the LlamaCppRollouts, or None when the trainer generates with transformers
    tokenizer: Any
    output_dir: Path
    checkpoint: Path | None
    resumed_step: int | None  # read now: checkpoint rotation may delete that directory during training
    budget: Any = None  # the TimeBudget callback (max_minutes), if any


def resume_point(cfg: TrainConfig, requested: dict[str, Any], out: Path) -> Path | None:
    """The checkpoint to resume from: the run directory's newest, or the portable state's when that
    is further on (a fresh clone, another machine). A state or checkpoint made with another config is
    an InputError naming the fields that differ."""
    ckpt = last_checkpoint(out)
    if ckpt is not None and (out / "config.yaml").is_file():
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        check_same_config(saved, cfg.to_dict(), f"the run directory {out}")
    if cfg.state_dir:
        held = state_step(Path(cfg.state_dir))
        if held is not None and (ckpt is None or held > checkpoint_step(ckpt)):
            ckpt = restore_state(Path(cfg.state_dir), out, requested)
            log.info("restored the run state of step %d from %s", held, cfg.state_dir)
            if not (out / "config.yaml").is_file():
                dump_config(cfg, out / "config.yaml")
    return ckpt


def build_run(cfg: TrainConfig, progress: bool = True, started: float | None = None) -> Run:
    """`started`: when this start began (time.monotonic), for the time budget; default now."""
    started = time.monotonic() if started is None else started
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; pyproject pins the TRL it was tested with
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from transformers.trainer_callback import ProgressCallback
    from catrl.grpo_trainer import trainer_class
    from catrl.heap import keep_freed_memory, release_setup_memory
    from catrl.hf_policy import resolve_policy

    keep_freed_memory()  # before the first tensor: the steps then reuse their memory (catrl.heap)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    requested = cfg.to_dict()  # as given: what a portable state is checked against on another machine
    cfg = replace(cfg, dtype=resolve_dtype(cfg.dtype), rollouts=resolve_rollouts(cfg),  # the saved config says what ran
                  prompts_dir=prompting.use_dir(cfg.prompts_dir))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = resume_point(cfg, requested, out)
    if ckpt is not None:
        log.info("resuming %s from %s (its config.yaml is kept; this run's is config.resume.yaml)", out, ckpt.name)
        dump_config(cfg, out / "config.resume.yaml")
    else:
        dump_config(cfg, out / "config.yaml")
        for stale in ("metrics.jsonl", "audit.jsonl", "starts.jsonl"):
            (out / stale).unlink(missing_ok=True)
    resumed_step = checkpoint_step(ckpt) if ckpt else None
    trim_after_step(out / "metrics.jsonl", resumed_step or 0)
    trim_after_step(out / "audit.jsonl", resumed_step or 0)
    with (out / "starts.jsonl").open("a") as f:
        f.write(json.dumps(start_record(cfg, resumed_step or 0)) + "\n")
    policy_dir = resolve_policy(cfg.policy)
    tok = AutoTokenizer.from_pretrained(str(policy_dir), padding_side="left")

    def count(messages: list[dict]) -> int:
        return len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))

    rows, dropped = prompt_rows(cfg, count)
    if dropped:
        log.warning("dropped %d prompts longer than max_prompt_tokens=%d", dropped, cfg.max_prompt_tokens)
    reward = build_reward(cfg, out / "audit.jsonl")
    rollouts = build_rollouts(cfg, out) if cfg.rollouts == "llamacpp" else None
    peft_config = None
    if cfg.lora_r > 0:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    callbacks = [metrics_callback(out / "metrics.jsonl", rollouts and rollouts.seconds_metrics)]
    if cfg.keep_adapter_steps:
        callbacks.append(snapshot_callback(out, cfg.keep_adapter_steps))
    if cfg.state_dir:
        callbacks.append(state_callback(out, Path(cfg.state_dir), requested))
    budget = budget_callback(cfg.max_minutes * 60, started) if cfg.max_minutes else None
    if budget is not None:
        callbacks.append(budget)
    trainer = trainer_class()(
        model=str(policy_dir), reward_funcs=[reward], args=grpo_args(cfg, out),
        train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft_config,
        callbacks=callbacks, rollout_func=rollouts,
    )
    if not progress:
        trainer.remove_callback(ProgressCallback)
    release_setup_memory()
    return Run(trainer, reward, rollouts, tok, out, ckpt, resumed_step, budget)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run (or resume) CaT-RL as configured; export the adapter and a merged model at the end."""
    started = time.monotonic()
    run = build_run(cfg, progress, started)
    try:
        check_budget(cfg, run.output_dir, started)
        if run.checkpoint is not None and run.resumed_step is not None and run.resumed_step >= cfg.steps:
            # a finished run, started again (to export, or by a script that resumes every stage): the trainer
            # would take one more step past max_steps, so load the last checkpoint's weights instead
            log.info("%s already reached step %d of %d: exporting %s", run.output_dir, run.resumed_step, cfg.steps, run.checkpoint.name)
            load_checkpoint_weights(run.trainer.model, run.checkpoint)
            run.trainer.state.global_step = run.resumed_step
        else:
            run.trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
        curves = plot_curves(run.output_dir / "metrics.jsonl", run.output_dir / "curves.png", title=f"{RUN_TITLES[cfg.reward]}: {cfg.policy} on {cfg.dataset}")
        if run.budget is not None and run.budget.stopped_at is not None:
            return TrainResult(run.output_dir, run.trainer.state.global_step, run.resumed_step, None, None, curves, stopped=True,
                               state_dir=Path(cfg.state_dir) if cfg.state_dir else None)
        adapter_dir, merged_dir = export(run.trainer, run.tokenizer, run.output_dir)
    finally:
        if (anchor := getattr(run.reward.reward, "anchor", None)) is not None:  # the majority baseline has none
            anchor.close()
        if run.rollouts is not None:
            run.rollouts.engine.close()
    return TrainResult(run.output_dir, run.trainer.state.global_step, run.resumed_step, adapter_dir, merged_dir, curves,
                       state_dir=Path(cfg.state_dir) if cfg.state_dir else None)


RUN_TITLES = {"cat": "CaT-RL", "majority": "majority-vote RL (TTRL)", "random": "random-reward RL (control)", "format": "format-reward RL (control)"}


def load_checkpoint_weights(model, ckpt: Path) -> None:
    """The trained weights of a checkpoint: its LoRA adapter (as Trainer resumes one), or the full model."""
    if (ckpt / "adapter_model.safetensors").is_file() and hasattr(model, "load_adapter"):
        model.load_adapter(str(ckpt), adapter_name=model.active_adapter, is_trainable=False)
        return
    from transformers.modeling_utils import load_sharded_checkpoint

    if (ckpt / "model.safetensors.index.json").is_file():
        load_sharded_checkpoint(model, str(ckpt))
        return
    from safetensors.torch import load_file

    if not (ckpt / "model.safetensors").is_file():
        raise InputError(f"{ckpt}: no adapter_model.safetensors or model.safetensors to export")
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)


def export(trainer, tok, out: Path) -> tuple[Path | None, Path]:
    """The trained LoRA adapter (if any) and a merged plain HF model that any stack can load."""
    model = trainer.model
    adapter_dir = None
    if hasattr(model, "merge_and_unload"):
        adapter_dir = out / "adapter"
        model.save_pretrained(str(adapter_dir))
        tok.save_pretrained(str(adapter_dir))
        model = model.merge_and_unload()
    merged_dir = out / "merged"
    model.save_pretrained(str(merged_dir), safe_serialization=True)
    tok.save_pretrained(str(merged_dir))
    return adapter_dir, merged_dir
