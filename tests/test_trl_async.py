"""AsyncCaTRewardFunc, run the way GRPOTrainer runs async reward functions: gathered together on
TRL's own daemon event loop, the trainer thread waiting on the result."""

import asyncio
import threading

import pytest

from catrl.integrations.trl import AsyncCaTRewardFunc, CaTRewardFunc
from catrl.rewards import CaTReward
from catrl.types import Sampling
from fakes import ScriptedEngine

trl_utils = pytest.importorskip("trl.trainer.utils")

P1, P2 = "What is 6*7?", "What is 2+2?"
COMPLETIONS = ["\\boxed{42}", "\\boxed{42}", "\\boxed{41}", "no answer", "\\boxed{4}", "\\boxed{4}", "\\boxed{4}", "\\boxed{5}"]


def run_like_trl(funcs, **kwargs):
    """What GRPOTrainer._calculate_rewards does with async reward functions."""
    thread, loop, ready = trl_utils.start_event_loop_in_daemon(name="test-rewards")
    ready.wait()
    try:
        async def gather():
            return await asyncio.gather(*(f(**kwargs) for f in funcs))

        return asyncio.run_coroutine_threadsafe(gather(), loop).result(timeout=300)
    finally:
        trl_utils.shutdown_event_loop_in_daemon(thread, loop)


class MeetingEngine(ScriptedEngine):
    """An anchor that answers only once the other anchor is mid-call too (a barrier): called one after the
    other, the barrier times out and the call fails."""

    def __init__(self, barrier: threading.Barrier):
        super().__init__()
        self.barrier = barrier

    def generate(self, requests, sampling, n=1, on_result=None):
        self.barrier.wait()
        return super().generate(requests, sampling, n, on_result)


def test_trl_sees_an_async_reward_and_gets_the_sync_rewards(tmp_path):
    reply = lambda p: "\\boxed{42}" if "\\boxed{42}" in p else "\\boxed{4}"  # noqa: E731
    sync = CaTRewardFunc(CaTReward(ScriptedEngine(reply)), num_generations=4)
    async_ = AsyncCaTRewardFunc(CaTReward(ScriptedEngine(reply)), num_generations=4, audit_path=tmp_path / "a.jsonl")
    assert trl_utils.is_async_callable(async_) and not trl_utils.is_async_callable(sync)
    kw = dict(prompts=[P1] * 4 + [P2] * 4, completions=COMPLETIONS, completion_ids=[[1]] * 8)
    logged = {}
    [rewards] = run_like_trl([async_], log_metric=lambda k, v: logged.__setitem__(k, v), **kw)
    assert rewards == sync(**kw) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert logged["cat/reward_mean"] == 5 / 8 and len((tmp_path / "a.jsonl").read_text().splitlines()) == 2


def test_async_rewards_run_together():
    """Two CaT rewards whose anchor calls must overlap to finish: they do not queue behind each other."""
    barrier = threading.Barrier(2, timeout=20)
    funcs = [AsyncCaTRewardFunc(CaTReward(MeetingEngine(barrier)), num_generations=4) for _ in range(2)]
    out = run_like_trl(funcs, prompts=[P1] * 4, completions=COMPLETIONS[:4], completion_ids=[[1]] * 4)
    assert out == [[1.0, 1.0, 0.0, 0.0]] * 2 and not barrier.broken


@pytest.mark.real_model
def test_async_reward_with_a_real_anchor_server(llama_server):
    """The case it is for: the anchor is an OpenAI-compatible server (a real llama.cpp server on loopback)."""
    from catrl.engines.openai import OpenAIConfig, OpenAIEngine

    anchor = OpenAIEngine(OpenAIConfig(base_url=llama_server.base_url, model="smol", concurrency=2))
    reward = CaTReward(anchor, sampling=Sampling(temperature=0.0, max_tokens=48, seed=0))
    func = AsyncCaTRewardFunc(reward, num_generations=2)
    [rewards] = run_like_trl([func], prompts=[P1, P1, P2, P2], completions=["6*7 = 42. \\boxed{42}", "\\boxed{42}", "\\boxed{4}", "\\boxed{5}"],
                             completion_ids=[[1]] * 4)
    assert len(rewards) == 4 and set(rewards) <= {0.0, 1.0}
    sync = CaTRewardFunc(reward, num_generations=2)(prompts=[P1, P1, P2, P2], completions=["6*7 = 42. \\boxed{42}", "\\boxed{42}", "\\boxed{4}", "\\boxed{5}"],
                                                      completion_ids=[[1]] * 4)
    assert rewards == sync  # greedy anchor: the same references whichever thread asked


@pytest.mark.real_model
def test_a_real_anchor_past_its_timeout_gives_flagged_zero_rewards(smol_path):
    """The embedded engine's own timeout (as `anchor_timeout_s` sets it) inside the TRL reward: reward 0, `anchor_error`."""
    from catrl import models
    from catrl.engines.llamacpp import LlamaCppEngine

    anchor = LlamaCppEngine(models.SMALLEST_MODEL, max_seqs=2, n_ctx_seq=1024, timeout_s=1e-6)
    try:
        logged = {}
        func = CaTRewardFunc(CaTReward(anchor, sampling=Sampling(max_tokens=48)), num_generations=2)
        rewards = func(prompts=[P1, P1], completions=["\\boxed{42}", "\\boxed{42}"], log_metric=lambda k, v: logged.__setitem__(k, v))
        assert rewards == [0.0, 0.0] and logged["cat/anchor_error_groups"] == 1.0
    finally:
        anchor.close()
