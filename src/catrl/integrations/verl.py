"""CaT rewards for veRL's batch reward manager (`reward.reward_manager.name=batch`).

veRL's BatchRewardManager decodes every response of a training batch and calls one function:
`compute_score(data_sources, solution_strs, ground_truths, extra_infos, **reward_kwargs)`, which
must return one score (or dict with "score") per response. With GRPO, veRL repeats each prompt
`rollout.n` times with `interleave=True`, so a prompt's G responses are consecutive and share its
`extra_info` (by default the same dict object, since the rows are repeated by reference). This
function regroups the batch into those runs (by `extra_info["uid"]`, else `["index"]`, else the
dict's identity), checks each run is a whole group when `group_size` is given, and scores all
groups with one batched anchor call. Ground truths are ignored: CaT uses no labels (`audit_path`
keeps them next to each group, for `catrl audit` to grade the reward afterwards).

    reward.reward_manager.name=batch
    reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.anchor_base_url=http://a1:8001/v1,http://a2:8002/v1
    +reward.custom_reward_function.reward_kwargs.group_size=8

docs/verl/cat_grpo.sh has the paper's whole setting. The engine is built once per process from
the kwargs (veRL calls the function in its reward workers) and reused; point `anchor_base_url`
at several comma-separated replicas to spread load.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catrl.engines.factory import EngineOptions, open_engine
from catrl.errors import InputError
from catrl.grouping import consecutive_runs
from catrl.rewards import AnchorFailures, CaTReward
from catrl.types import Sampling

_REWARDS: dict[tuple, CaTReward] = {}
_FAILURES: dict[int, tuple[CaTReward, AnchorFailures]] = {}  # per reward object: failed calls in a row
_LOCK = threading.Lock()


def _prompt_key(info: Any) -> tuple[str, Any] | None:
    """What names a prompt in veRL's extra_info: its uid, else its dataset index."""
    if isinstance(info, dict):
        for k in ("uid", "index"):
            if info.get(k) is not None:
                return (k, info[k])
    return None


def group_runs(extra_infos: Sequence[Any], group_size: int | None = None) -> list[list[int]]:
    """Indices of consecutive responses of one prompt. InputError on a partial group."""
    return consecutive_runs([_prompt_key(x) or ("id", id(x)) for x in extra_infos], group_size,
                            "Keep rollout.n equal to group_size and do not shuffle the batch before the reward.")


def _prompt_id(info: Any) -> str | None:
    key = _prompt_key(info)
    return str(key[1]) if key else None


def _gold(ground_truths: Sequence[Any] | None, i: int) -> str | None:
    """The ground truth veRL passed, kept in the audit row for monitoring (`catrl audit`); never scored."""
    if ground_truths is None or i >= len(ground_truths) or ground_truths[i] is None:
        return None
    return str(ground_truths[i])


def _reward(anchor_model: str, anchor_base_url: str | None, match: str, max_tokens: int, temperature: float,
            top_p: float, top_k: int, seed: int, estimator: str = "synthesis", min_support: int = 1) -> CaTReward:
    key = (anchor_model, anchor_base_url, match, max_tokens, temperature, top_p, top_k, seed, estimator, min_support)
    with _LOCK:
        if key not in _REWARDS:
            engine = open_engine(EngineOptions(model=anchor_model, base_url=anchor_base_url, use_cache=False))
            _REWARDS[key] = CaTReward(engine, match=match, sampling=Sampling(temperature=temperature, top_p=top_p, top_k=top_k,
                                                                             max_tokens=max_tokens, seed=seed),
                                     estimator=estimator, min_support=min_support)
        return _REWARDS[key]


def compute_score(
    data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any], extra_infos: Sequence[Any],
    *, anchor_model: str = "qwen2.5-coder-1.5b", anchor_base_url: str | None = None, group_size: int | None = None,
    match: str = "symbolic", max_tokens: int = 1024, temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20,
    seed: int = 0, audit_path: str | None = None, reward: CaTReward | None = None, max_anchor_failures: int = 3,
    estimator: str = "synthesis", min_support: int = 1, **_: Any,
) -> list[dict[str, Any]]:
    """One dict per response: `score` (the CaT reward) plus per-response extras veRL logs. A failed
    anchor call gives its batch reward 0 flagged `anchor_error`; `max_anchor_failures` in a row raise."""
    if not (len(data_sources) == len(solution_strs) == len(extra_infos)):
        raise InputError(f"batch fields differ in length: {len(data_sources)} data_sources, {len(solution_strs)} "
                         f"solution_strs, {len(extra_infos)} extra_infos")
    runs = group_runs(extra_infos, group_size)
    if reward is not None and min_support != getattr(reward, "min_support", min_support):
        raise InputError(f"min_support={min_support} was given with a reward of its own (min_support={reward.min_support}): set it on the reward")
    reward = reward or _reward(anchor_model, anchor_base_url, match, max_tokens, temperature, top_p, top_k, seed, estimator, min_support)
    groups = [[solution_strs[i] for i in r] for r in runs]
    _, failures = _FAILURES.setdefault(id(reward), (reward, AnchorFailures()))  # holding the reward keeps its id unique
    failures.limit = max_anchor_failures
    records = failures.score(lambda: reward.score_groups([None] * len(runs), groups), groups)
    out: list[dict[str, Any]] = [{}] * len(solution_strs)
    for r, rec in zip(runs, records, strict=True):
        ref_ok = float(rec.reference is not None and rec.reference.answer is not None)
        for i, score in zip(r, rec.rewards, strict=True):
            out[i] = {"score": float(score), "cat_reference_has_answer": ref_ok, "cat_group_flagged": float(bool(rec.flags)),
                      "cat_anchor_error": float("anchor_error" in rec.flags)}
    if audit_path:
        Path(audit_path).parent.mkdir(parents=True, exist_ok=True)
        with open(audit_path, "a", encoding="utf-8") as f:
            for r, texts, rec in zip(runs, groups, records, strict=True):
                row = {"responses": r, "id": _prompt_id(extra_infos[r[0]]), "data_source": data_sources[r[0]],
                       "rollouts": texts, "gold": _gold(ground_truths, r[0]), **rec.to_dict()}
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return out
