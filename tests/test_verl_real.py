"""veRL's own reward path with the CaT reward: a real `verl.DataProto` built the way veRL's trainer
builds it (a uid per prompt, `repeat(n, interleave=True)`), veRL's `BatchRewardManager` decoding the
responses with a real tokenizer, and the anchor a real embedded model on llama.cpp. Runs where veRL
is installed (its own environment: `pip install -e '.[verl]'`; .ci/run makes one)."""

from __future__ import annotations

import uuid
from functools import partial

import numpy as np
import pytest

verl = pytest.importorskip("verl")


@pytest.mark.real_model
def test_batch_reward_manager_with_cat_reward(smol_path, smol_engine):
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.workers.reward_manager import BatchRewardManager

    from catrl.integrations.verl import compute_score
    from catrl.rewards import CaTReward
    from catrl.types import Sampling

    tok = AutoTokenizer.from_pretrained(str(smol_path.parent), gguf_file=str(smol_path))
    n, prompts = 3, ["What is 2+2?", "What is 3*3?"]
    responses = ["2+2 = \\boxed{4}", "It is \\boxed{4}", "\\boxed{5}", "3*3 = \\boxed{9}", "\\boxed{9}", "I think \\boxed{6}"]
    p_len, r_len = 16, 24

    def left_pad(ids, width):
        return [tok.pad_token_id or 0] * (width - len(ids)) + ids, [0] * (width - len(ids)) + [1] * len(ids)

    def right_pad(ids, width):
        return ids + [tok.pad_token_id or 0] * (width - len(ids)), [1] * len(ids) + [0] * (width - len(ids))

    p_ids, p_mask = zip(*(left_pad(tok(p, add_special_tokens=False)["input_ids"][:p_len], p_len) for p in prompts))
    prompt_batch = DataProto.from_dict(
        tensors={"prompts": torch.tensor(p_ids), "prompt_mask": torch.tensor(p_mask)},
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * 2, dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": "4"}, {"style": "rule", "ground_truth": "9"}], dtype=object),
            "extra_info": np.array([{"split": "train", "index": 0}, {"split": "train", "index": 1}], dtype=object),
            "uid": np.array([str(uuid.uuid4()) for _ in prompts], dtype=object),
        },
    )
    batch = prompt_batch.repeat(repeat_times=n, interleave=True)  # what ray_trainer does before rollout
    r_ids, r_mask = zip(*(right_pad(tok(r, add_special_tokens=False)["input_ids"][:r_len], r_len) for r in responses))
    batch.batch["responses"] = torch.tensor(r_ids)
    batch.batch["attention_mask"] = torch.cat([batch.batch["prompt_mask"], torch.tensor(r_mask)], dim=1)
    reward = CaTReward(smol_engine, sampling=Sampling(max_tokens=48))
    manager = BatchRewardManager(tok, num_examine=0, compute_score=partial(compute_score, reward=reward, group_size=n))
    out = manager(batch, return_dict=True)
    scores = out["reward_tensor"]
    assert scores.shape == (len(responses), r_len)
    lengths = torch.tensor(r_mask).sum(dim=1)
    per_response = [float(scores[i, lengths[i] - 1]) for i in range(len(responses))]
    assert set(per_response) <= {0.0, 1.0} and float(scores.sum()) == sum(per_response)  # reward only on the last token
    assert len(out["reward_extra_info"]["cat_group_flagged"]) == len(responses)
