"""GRPO rollouts on llama.cpp (TRL's rollout_func). The unit test checks grouping and order on a fake
engine; the real test proves on SmolLM2-135M that after each sync llama.cpp samples what the PEFT
policy in transformers would (greedy, token for token), with the prompt ids transformers' own
tokenizer makes."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from catrl.errors import InputError
from catrl.integrations.llamacpp_rollouts import LlamaCppRollouts, as_request, step_seed
from catrl.types import Completion, Sampling


class FakeEngine:
    def __init__(self):
        self.calls: list[tuple[list[str], int, int]] = []

    def tokenize_prompt(self, req):
        return [len(req.messages[-1]["content"])]

    def generate(self, requests, sampling, n=1):
        self.calls.append(([r.messages[-1]["content"] for r in requests], n, sampling.seed))
        return [[Completion(f"{r.messages[-1]['content']}{j}", "stop", 1, 1, token_ids=[i, j, 99]) for j in range(n)]
                for i, r in enumerate(requests)]


# nats by which llama.cpp's greedy token may trail the trainer's own greedy choice (teacher-forced) and
# still count as the same policy's pick: measured up to 0.25 where a near-tie flipped, against 2.4 for
# the completions of the previous adapter scored under the new one
NEAR_TIE = 0.5


def _msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_one_completion_per_incoming_prompt_in_order(tmp_path):
    eng = FakeEngine()
    ro = LlamaCppRollouts(eng, tmp_path / "base.gguf", tmp_path, Sampling(max_tokens=8, seed=5))
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=3), model=None)
    ro.synced_step = 3  # the adapter sync is the real test's business
    out = ro([_msgs("a")] * 3 + [_msgs("bb")] * 3 + [_msgs("c")] * 2, trainer)
    # one call for the group of 2, one for the two groups of 3; each group's samples are j = 0..n-1
    assert eng.calls == [(["c"], 2, step_seed(5, 3)), (["a", "bb"], 3, step_seed(5, 3))]
    assert out["prompt_ids"] == [[1]] * 3 + [[2]] * 3 + [[1]] * 2
    assert out["completion_ids"] == [[0, 0, 99], [0, 1, 99], [0, 2, 99], [1, 0, 99], [1, 1, 99], [1, 2, 99], [0, 0, 99], [0, 1, 99]]
    assert out["logprobs"] is None
    assert step_seed(5, 3) != step_seed(5, 4) and step_seed(5, 3) == step_seed(5, 3)
    with pytest.raises(InputError, match="conversational"):
        as_request("plain text prompt")


@pytest.mark.real_model
def test_rollouts_follow_the_trainers_lora_after_each_sync(smol_path, tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from catrl.engines.llamacpp import LlamaCppEngine
    from catrl.hf_policy import resolve_policy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hf = resolve_policy("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(hf)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32),
                            LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])).eval()

    def set_b(std: float) -> None:
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, std) if std else p.zero_()

    def hf_greedy(prompt_ids: list[int], n: int) -> list[int]:
        with torch.no_grad():
            out = policy.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                  max_new_tokens=n, do_sample=False)[0, len(prompt_ids):].tolist()
        eos = {tok.eos_token_id}
        cut = next((i + 1 for i, t in enumerate(out) if t in eos), len(out))  # keep the end token, as TRL's rollouts do
        return out[:cut]

    def hf_gaps(prompt_ids: list[int], completion: list[int]) -> list[float]:
        """Per sampled token: how far (nats) below the policy's own greedy choice it was, teacher-forced."""
        with torch.no_grad():
            logits = policy(input_ids=torch.tensor([prompt_ids + completion])).logits[0, len(prompt_ids) - 1:-1].float()
        lp = torch.log_softmax(logits, -1)
        return (lp.max(-1).values - lp[torch.arange(len(completion)), torch.tensor(completion)]).tolist()

    engine = LlamaCppEngine("smollm2-135m", max_seqs=4, n_ctx_seq=512, n_threads=1)
    ro = LlamaCppRollouts(engine, smol_path, tmp_path / "sync", Sampling(temperature=0, max_tokens=12))
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), model=policy)
    prompts = [_msgs("What is the capital of France?")] * 2 + [_msgs("Write a haiku about autumn leaves.")] * 2
    try:
        set_b(0.1)  # a trained-looking adapter: PEFT starts B at zero, a no-op
        out = ro(prompts, trainer)
        lora_identity = engine.identity
        assert ":lora-" in lora_identity
        for i, p in enumerate(prompts):
            assert out["prompt_ids"][i] == tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
        # llama.cpp's q4_1 kernels and the trainer's dequantized fp32 weights are ~0.03 nats per token
        # apart: every greedy pick of the engine is the policy's own greedy pick, or a near-tie with it
        # (machines differ in which near-ties flip; one AVX-512 machine flipped the 12th token)
        assert max(g for i in (0, 2) for g in hf_gaps(out["prompt_ids"][i], out["completion_ids"][i])) < NEAR_TIE
        adapted = [hf_greedy(out["prompt_ids"][i], 12) for i in (0, 2)]
        assert out["completion_ids"][0] == out["completion_ids"][1]  # greedy: both samples of a group agree

        set_b(0.1)  # the policy changes (new draws); within the same step nothing is re-synced
        assert ro(prompts, trainer)["completion_ids"] == out["completion_ids"] and engine.identity == lora_identity
        trainer.state.global_step = 1  # the next optimizer step syncs the new adapter
        again = ro(prompts, trainer)
        assert engine.identity != lora_identity and ro.synced_step == 1
        changed = [hf_greedy(again["prompt_ids"][i], 12) for i in (0, 2)]
        assert changed != adapted and again["completion_ids"] != out["completion_ids"]  # the engine follows the new adapter
        assert max(g for i in (0, 2) for g in hf_gaps(out["prompt_ids"][i], out["completion_ids"][i])) > NEAR_TIE  # the test can tell
        assert max(g for i in (0, 2) for g in hf_gaps(again["prompt_ids"][i], again["completion_ids"][i])) < NEAR_TIE
    finally:
        engine.close()
