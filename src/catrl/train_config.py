"""The CaT-RL run configuration: a YAML file, overridden by `--set key=value` flags.

Errors name the file, the line and the field, because a typo in a config should cost seconds, not
a training run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from catrl.errors import InputError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """One CaT-RL run. Defaults: the README's CPU run (0.5B policy with LoRA, the same initial
    model frozen on llama.cpp as anchor, GSM8K questions as unlabeled prompts)."""

    # models
    policy: str = "qwen2.5-coder-0.5b"  # embedded name, .gguf file, or HF model directory (trained)
    anchor: str | None = None  # embedded name or .gguf (llama.cpp), or a server's model name; default: the policy's initial model
    anchor_base_url: str | None = None  # an OpenAI-compatible server for the anchor
    judge: str | None = None  # free-form task: the rubric judge (default: the anchor's model)
    judge_base_url: str | None = None
    # task and data (gold answers, when present, are only logged, never used as reward)
    task: str = "math"  # math | freeform
    dataset: str = "gsm8k"
    offset: int = 0
    limit: int | None = 200
    prompt: str = "solve"  # prompt template for plain questions (src/catrl/prompts/)
    prompts_dir: str | None = None  # a directory of <name>.txt files replacing packaged prompts (synthesis, rubric, judge); default: CATRL_PROMPTS
    match: str = "symbolic"  # math: symbolic (math-verify) | string (the paper's boxed-string match)
    reward: str = "cat"  # cat | majority (math: TTRL's majority-vote pseudo-label, no anchor) | random (Bernoulli(0.5): a control) | format (math: 1 for a stated answer: a control)
    estimator: str = "synthesis"  # reward "cat": how the reference is estimated (catrl.estimators spec, e.g. cluster, permutation:k=4)
    min_support: int = 1  # math rewards cat and majority: rollouts that must reach the reference's answer for any to be paid (1: the paper's; 2: corroborated)
    guards: str = "default"  # free-form reward: catrl.guards ("default": all but the empty probe; "all", "none" or a list)
    # GRPO
    g: int = 8  # rollouts per question (num_generations)
    prompts_per_step: int = 2  # questions per optimizer step
    micro_batch: int | None = None  # completions per forward/backward pass (default g); smaller saves memory
    steps: int = 100
    learning_rate: float = 1e-5
    beta: float = 0.0  # TRL's KL coefficient in the loss (0: no reference model)
    loss_type: str = "grpo"
    max_prompt_tokens: int = 512  # longer prompts are dropped from the dataset (reported)
    max_completion_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    anchor_max_tokens: int = 768
    anchor_flash_attn: bool | None = None  # embedded anchor: false decodes ~1.4x faster after its long prompts (docs/bench)
    anchor_timeout_s: float | None = 1800.0  # embedded anchor: one reward call's limit (then reward 0, anchor_error); servers: 120 s per HTTP call, retried
    # LoRA (lora_r: 0 trains all weights)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    rollouts: str = "auto"  # where GRPO samples: llamacpp (the policy's GGUF plus the current LoRA; auto picks it for a GGUF policy with LoRA on a CPU) | transformers
    dtype: str = "auto"  # auto (bf16 where the hardware computes in it, else fp32) | bf16 | fp32
    # bookkeeping
    output_dir: str = "runs/cat-rl"
    state_dir: str | None = None  # the run's portable state (LoRA, optimizer, RNG, trail; catrl.run_state), written after every checkpoint and resumed from on any machine: commit it
    max_minutes: float | None = None  # time budget: checkpoint and exit cleanly before the next step would pass it (run again to resume)
    save_steps: int = 10
    keep_adapter_steps: int = 0  # also keep the LoRA adapter of every Nth step in adapters/step-N (checkpoint rotation deletes the rest): accuracy over training
    seed: int = 0
    threads: int | None = None

    def validate(self, where: str = "config") -> TrainConfig:
        checks = [
            ("task", self.task in ("math", "freeform"), "must be math or freeform"),
            ("match", self.match in ("symbolic", "string"), "must be symbolic or string"),
            ("reward", self.reward in ("cat", "random") or (self.reward in ("majority", "format") and self.task == "math"),
             "must be cat or random, or majority or format with task math (both need final answers)"),
            ("g", self.g >= 2, "must be >= 2 (GRPO needs a group)"),
            ("prompts_per_step", self.prompts_per_step >= 1, "must be >= 1"),
            ("steps", self.steps >= 1, "must be >= 1"),
            ("micro_batch", self.micro_batch is None or (self.micro_batch >= 1 and (self.g * self.prompts_per_step) % self.micro_batch == 0),
             "must divide g * prompts_per_step (the completions of one step)"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("anchor_timeout_s", self.anchor_timeout_s is None or self.anchor_timeout_s > 0, "must be > 0 (or null: no limit)"),
            ("beta", self.beta >= 0, "must be >= 0"),
            ("max_completion_tokens", self.max_completion_tokens >= 1, "must be >= 1"),
            ("rollouts", self.rollouts in ("auto", "llamacpp", "transformers"), "must be auto, llamacpp or transformers"),
            ("dtype", self.dtype in ("auto", "bf16", "fp32"), "must be auto, bf16 or fp32"),
            ("lora_r", self.lora_r >= 0, "must be >= 0"),
            ("save_steps", self.save_steps >= 1, "must be >= 1"),
            ("keep_adapter_steps", self.keep_adapter_steps == 0 or (self.lora_r > 0 and self.keep_adapter_steps % self.save_steps == 0),
             "must be 0, or a multiple of save_steps with LoRA (lora_r > 0): snapshots are taken from the checkpoints"),
            ("keep_adapter_steps", self.keep_adapter_steps >= 0, "must be >= 0"),
            ("offset", self.offset >= 0, "must be >= 0"),
            ("min_support", 1 <= self.min_support <= self.g, "must be from 1 (no corroboration) to g"),
            ("min_support", self.min_support == 1 or (self.task == "math" and self.reward in ("cat", "majority")),
             "applies to the math rewards cat and majority only"),
            ("max_minutes", self.max_minutes is None or self.max_minutes > 0, "must be > 0 (or null: no budget)"),
            ("state_dir", self.state_dir is None or self.lora_r > 0, "needs LoRA (lora_r > 0): a full model's state is too large to commit"),
        ]
        for name, ok, msg in checks:
            if not ok:
                raise InputError(f"{where}: field {name!r} = {getattr(self, name)!r} {msg}")
        from catrl.estimators import check_estimator
        try:
            check_estimator(self.estimator, self.g, "reasoning" if self.task == "math" else "freeform", self.match)
        except InputError as e:
            raise InputError(f"{where}: field 'estimator' = {self.estimator!r}: {e}") from None
        from catrl.guards import Guards
        try:
            Guards.parse(self.guards)
        except InputError as e:
            raise InputError(f"{where}: field 'guards' = {self.guards!r}: {e}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any, where: str) -> Any:
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise InputError(f"{where}: field {name!r} may not be empty")
    base = args[0] if args and typing.get_origin(hint) is not list else hint
    if typing.get_origin(base) is list or base is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: field {name!r} must be a list of strings")
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise InputError(f"{where}: field {name!r} must be {getattr(base, '__name__', base)}, got {value!r}")


def _field_lines(path: Path, text: str) -> dict[str, int]:
    node = yaml.compose(text)
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise InputError(f"{path}:{node.start_mark.line + 1}: the config must be a mapping of field: value")
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def load_config(path: Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (optional), then apply `key=value` overrides (values parsed as YAML)."""
    values: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"{path}: cannot read the config ({e.strerror})") from None
        try:
            lines = _field_lines(path, text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise InputError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
        for k, v in data.items():
            where = f"{path}:{lines.get(str(k), '?')}"
            if k not in known:
                raise InputError(f"{where}: unknown field {k!r} (fields: {', '.join(sorted(known))})")
            values[k] = _coerce(k, v, where)
    for item in overrides or []:
        k, sep, raw = item.partition("=")
        k = k.strip().replace("-", "_")
        where = f"--set {item}"
        if not sep:
            raise InputError(f"{where}: expected key=value")
        if k not in known:
            raise InputError(f"{where}: unknown field {k!r} (fields: {', '.join(sorted(known))})")
        try:
            v = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            v = raw
        values[k] = _coerce(k, v, where)
    return TrainConfig(**values).validate(str(path) if path else "flags")


def dump_config(cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
