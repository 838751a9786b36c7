"""CaT rewards as a TRL GRPOTrainer reward function.

TRL calls a reward function as `f(prompts, completions, completion_ids, **columns, log_metric=...)`
and expects one float per completion; the `num_generations` completions of one prompt arrive as
consecutive entries, and (in one process) the whole generation batch arrives in one call, before
it is split into micro-batches. This adapter regroups the batch into runs of G completions of one
prompt, checks that every group is whole (a partial group would let the anchor synthesize from a
subset: TRL issue #3896), scores all groups with one batched anchor call through CaTReward (math)
or RubricReward (free-form), and logs per step: reward mean/std, the share of groups with zero
reward variance, the reference's agreement with the rollouts' majority, and, when the dataset
happens to carry gold answers, the accuracy of the reference and of the rollouts themselves
(monitoring only: gold never reaches a reward). The audit trail holds, per group, the step, the
policy's prompt, the rollout texts and the whole RewardRecord, so any reward can be checked by hand.
It never sees the trainer's weights: the anchor is its own engine (the initial model on llama.cpp,
or a server). AsyncCaTRewardFunc is the same reward as a TRL async reward function.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catrl.control_rewards import FormatReward, RandomReward
from catrl.errors import InputError
from catrl.grouping import consecutive_runs
from catrl.rewards import AnchorFailures, CaTReward, MajorityReward, RubricReward
from catrl.selection import majority_of_answers
from catrl.types import RewardRecord
from catrl.verify import is_right


def completion_text(completion: Any) -> str:
    """TRL completions are strings, or (conversational datasets) lists of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    raise InputError(f"unsupported completion type {type(completion).__name__}")


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def whole_groups(prompts: Sequence[Any], num_generations: int) -> list[list[int]]:
    """Indices of consecutive runs of one prompt, cut into groups of num_generations; InputError
    if any group is partial (the batch does not hold whole groups)."""
    return consecutive_runs([prompt_key(p) for p in prompts], num_generations,
                            f"num_generations={num_generations}; run in one process, or make per_device_train_batch_size * "
                            "steps_per_generation a multiple of num_generations (TRL issue #3896)")


def step_metrics(records: Sequence[RewardRecord], golds: Sequence[str | None] | None = None) -> dict[str, float]:
    """What a CaT-RL run logs per step."""
    rewards = np.asarray([r for rec in records for r in rec.rewards], dtype=float)
    zero_var = [float(np.std(rec.rewards) == 0) for rec in records]
    out = {"cat/reward_mean": float(rewards.mean()) if rewards.size else float("nan"),
           "cat/reward_std": float(rewards.std()) if rewards.size else float("nan"),
           "cat/zero_variance_groups": float(np.mean(zero_var)) if zero_var else float("nan"),
           "cat/flagged_groups": float(np.mean([bool(rec.flags) for rec in records])) if records else float("nan"),
           "cat/anchor_error_groups": float(np.mean(["anchor_error" in rec.flags for rec in records])) if records else float("nan")}
    golds = list(golds) if golds is not None else [None] * len(records)
    verifiable = [(rec, g) for rec, g in zip(records, golds, strict=True) if rec.rubric is None and rec.reference is not None]
    estimated = [(rec, g) for rec, g in verifiable if not any(f.startswith("control:") for f in rec.flags)]  # controls have no reference
    if estimated:
        agree = []
        for rec, _ in estimated:
            maj = majority_of_answers(rec.answers).answer
            agree.append(float(maj is not None and is_right(maj, rec.reference.answer)))
        out["cat/reference_agrees_with_majority"] = float(np.mean(agree))
        if graded := [(rec, g) for rec, g in estimated if g is not None]:
            out["cat/reference_accuracy_vs_gold"] = float(np.mean([is_right(g, rec.reference.answer) for rec, g in graded]))
    if graded := [(rec, g) for rec, g in verifiable if g is not None]:
        out["cat/rollout_accuracy_vs_gold"] = float(np.mean([is_right(g, a) for rec, g in graded for a in rec.answers]))
    return out


class CaTRewardFunc:
    """A GRPOTrainer reward function over a CaTReward or RubricReward.

        reward = CaTRewardFunc(CaTReward(anchor_engine), num_generations=8)
        trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(num_generations=8, ...), ...)

    `gold_column`: a dataset column with gold answers, used only for the monitoring metrics.
    `id_column`: a dataset column naming each prompt, copied into the audit trail.
    `audit_path`: append every group (its prompt, rollouts and RewardRecord) as JSONL: the audit trail of every reward.
    `max_anchor_failures`: an anchor (or judge) call that fails (server down after its retries, timeout)
    gives that step's groups reward 0, flagged `anchor_error` (no gradient from them, the run goes on);
    this many failed calls in a row stop the run with the error, to resume once the anchor is back."""

    def __init__(
        self, reward: CaTReward | RubricReward | MajorityReward | RandomReward | FormatReward, num_generations: int, gold_column: str | None = None,
        audit_path: str | Path | None = None, gold_parser: Callable[[str], str | None] | None = None,
        id_column: str | None = None, max_anchor_failures: int = 3,
    ) -> None:
        self.reward, self.num_generations = reward, num_generations
        self.failures = AnchorFailures(max_anchor_failures)
        self.gold_column, self.gold_parser, self.id_column = gold_column, gold_parser, id_column
        self.audit_path = Path(audit_path) if audit_path else None
        self.__name__ = ("cat_rubric" if isinstance(reward, RubricReward) else "majority" if isinstance(reward, MajorityReward)
                         else getattr(reward, "name", "cat"))
        self.calls = 0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **kwargs: Any) -> list[float]:
        groups = whole_groups(prompts, self.num_generations)
        texts = [completion_text(c) for c in completions]
        rollouts = [[texts[i] for i in g] for g in groups]
        records = self.failures.score(lambda: self._score(prompts, groups, rollouts, completion_ids), rollouts)
        rewards = [0.0] * len(completions)
        for g, rec in zip(groups, records, strict=True):
            for i, r in zip(g, rec.rewards, strict=True):
                rewards[i] = float(r)
        golds = None
        if self.gold_column and self.gold_column in kwargs:
            col = kwargs[self.gold_column]
            parse = self.gold_parser or (lambda s: s)
            golds = [parse(col[g[0]]) if col[g[0]] is not None else None for g in groups]
        if log_metric is not None:
            for name, value in step_metrics(records, golds).items():
                log_metric(name, value)
            for stage, sec in getattr(self.reward, "last_seconds", {}).items():
                log_metric(f"cat/{stage}_seconds", sec)
        if self.audit_path is not None:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.audit_path, "a", encoding="utf-8") as f:
                ids = kwargs.get(self.id_column) if self.id_column else None
                state = kwargs.get("trainer_state")  # TRL passes its TrainerState; the batch feeds the next step
                step = state.global_step + 1 if getattr(state, "global_step", None) is not None else None
                for k, (g, rec) in enumerate(zip(groups, records, strict=True)):
                    row = {"step": step, "call": self.calls, "completions": g, "id": ids[g[0]] if ids is not None else None,
                           "prompt": prompts[g[0]], "rollouts": rollouts[k], "gold": golds[k] if golds is not None else None,
                           **rec.to_dict()}
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self.calls += 1
        return rewards

    def _score(self, prompts: Sequence[Any], groups: list[list[int]], rollouts: list[list[str]],
               completion_ids: Sequence[Sequence[int]] | None) -> list[RewardRecord]:
        if isinstance(self.reward, RubricReward):
            convs = [prompts[g[0]] for g in groups]  # text or messages: RubricReward takes either
            lengths = [[len(completion_ids[i]) for i in g] for g in groups] if completion_ids is not None else None
            return self.reward.score_groups(convs, rollouts, lengths=lengths)
        questions = [prompt_key(prompts[g[0]]) for g in groups]  # used only with include_question=True
        return self.reward.score_groups(questions, rollouts)


class AsyncCaTRewardFunc(CaTRewardFunc):
    """CaTRewardFunc as a TRL async reward function (same rewards, metrics and audit trail).

    GRPOTrainer awaits all async reward functions of a batch together (asyncio.gather on its own
    event-loop thread), so a CaT reward whose anchor is a server runs alongside the trainer's other
    async rewards (a second anchor, a judge, a remote verifier) instead of queueing behind them. The
    engines are synchronous, so the scoring runs in a worker thread and never blocks TRL's loop. Alone,
    it is no faster than CaTRewardFunc: TRL waits for the rewards before the loss either way."""

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                       log_metric: Callable[[str, float], None] | None = None, **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(CaTRewardFunc.__call__, self, prompts, completions, completion_ids, log_metric, **kwargs)
