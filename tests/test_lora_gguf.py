"""PEFT LoRA -> llama.cpp LoRA GGUF. Unit tests run on a tiny fake base GGUF; the real test proves on
SmolLM2-135M that llama.cpp with the converted adapter computes what transformers computes with the
adapter merged, and that it did not without the q/k row permutation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from catrl import lora_gguf
from catrl.errors import InputError
from catrl.lora_gguf import adapter_to_gguf

CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "bias": "none", "target_modules": ["q_proj", "k_proj"]}


def _base(path: Path, arch: str = "llama") -> Path:
    """A base GGUF with one block: q is 8x4 (2 heads of 4), k is 4x4 (1 kv head)."""
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 4), np.float32))
    w.add_tensor("blk.0.attn_k.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _adapter(d: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps(CONFIG if config is None else config))
    p = "base_model.model.model.layers.0.self_attn."
    if tensors is None:
        tensors = {
            p + "q_proj.lora_A.weight": np.ones((2, 4), np.float32),
            p + "q_proj.lora_B.weight": np.arange(16, dtype=np.float32).reshape(8, 2),
            p + "k_proj.lora_A.weight": np.ones((2, 4), np.float32),
            p + "k_proj.lora_B.weight": np.arange(8, dtype=np.float32).reshape(4, 2),
        }
    save_file(tensors, str(d / "adapter_model.safetensors"))
    return d


def _read(path: Path) -> tuple[dict, dict]:
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items()}, {t.name: np.array(t.data) for t in r.tensors}


@pytest.mark.parametrize("arch, q_rows, k_rows", [("llama", [0, 2, 1, 3, 4, 6, 5, 7], [0, 2, 1, 3]), ("qwen2", list(range(8)), list(range(4)))])
def test_converts_and_permutes_qk_rows_for_llama_only(tmp_path, arch, q_rows, k_rows):
    out = adapter_to_gguf(_adapter(tmp_path / "ad"), _base(tmp_path / "b.gguf", arch), tmp_path / "o.gguf")
    meta, t = _read(out)
    assert meta["general.architecture"] == arch and meta["general.type"] == "adapter"
    assert meta["adapter.type"] == "lora" and meta["adapter.lora.alpha"] == 4
    assert sorted(t) == [f"blk.0.attn_{m}.weight.lora_{x}" for m in "kq" for x in "ab"]
    np.testing.assert_array_equal(t["blk.0.attn_q.weight.lora_a"], np.ones((2, 4)))
    b = np.arange(16, dtype=np.float32).reshape(8, 2)
    np.testing.assert_array_equal(t["blk.0.attn_q.weight.lora_b"], b[q_rows])
    np.testing.assert_array_equal(t["blk.0.attn_k.weight.lora_b"], b[:4][k_rows])


@pytest.mark.parametrize(
    "change, where",
    [
        ({"peft_type": "PREFIX_TUNING"}, "'peft_type'"),
        ({"use_dora": True}, "'use_dora'"),
        ({"modules_to_save": ["lm_head"]}, "'modules_to_save'"),
        ({"lora_alpha": "big"}, "'lora_alpha'"),
        ({"r": 0}, "'r'"),
        ({"bias": "all"}, "'bias'"),
    ],
)
def test_refuses_what_llama_cpp_cannot_run(tmp_path, change, where):
    ad = _adapter(tmp_path / "ad", {**CONFIG, **change})
    with pytest.raises(InputError, match=where) as e:
        adapter_to_gguf(ad, _base(tmp_path / "b.gguf"), tmp_path / "o.gguf")
    assert "adapter_config.json" in str(e.value)
    assert not (tmp_path / "o.gguf").exists()


def test_refuses_bad_files_and_tensors(tmp_path):
    base = _base(tmp_path / "b.gguf")
    with pytest.raises(InputError, match="adapter_config.json: missing"):
        adapter_to_gguf(tmp_path / "nothing", base, tmp_path / "o.gguf")
    ad = _adapter(tmp_path / "ad")
    (ad / "adapter_model.safetensors").unlink()
    with pytest.raises(InputError, match="adapter_model.safetensors: missing"):
        adapter_to_gguf(ad, base, tmp_path / "o.gguf")
    (ad / "adapter_config.json").write_text("{not json")
    with pytest.raises(InputError, match="adapter_config.json: not valid JSON"):
        adapter_to_gguf(ad, base, tmp_path / "o.gguf")
    a, b = np.ones((2, 4), np.float32), np.ones((8, 2), np.float32)
    bad = {
        "unmapped": ({"base_model.model.model.layers.0.self_attn.rotary.lora_A.weight": a, "base_model.model.model.layers.0.self_attn.rotary.lora_B.weight": b}, "'model.layers.0.self_attn.rotary' has no tensor"),
        "lonely": ({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a}, "has lora_A but not its partner"),
        "shape": ({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((2, 5), np.float32), "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b}, "do not fit blk.0.attn_q.weight"),
        "other": ({"base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": a}, "neither a lora_A nor a lora_B"),
    }
    for name, (tensors, msg) in bad.items():
        ad = _adapter(tmp_path / name, tensors=tensors)
        with pytest.raises(InputError, match=msg) as e:
            adapter_to_gguf(ad, base, tmp_path / "o.gguf")
        assert "adapter_model.safetensors" in str(e.value)
    with pytest.raises(InputError, match="general.architecture is 'gemma'"):
        adapter_to_gguf(_adapter(tmp_path / "ok"), _base(tmp_path / "g.gguf", "gemma"), tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()


# -- the real thing ---------------------------------------------------------------------------------
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = ["What is the capital of France?", "Write a haiku about autumn leaves."]
CONTINUATION = "The capital of France is Paris, a city famous for the Eiffel Tower and its museums."


@pytest.fixture(scope="module")
def smol_lora(smol_path, tmp_path_factory):
    """A random LoRA (B ~ N(0, 0.1), scale 2) on SmolLM2's HF form, saved by PEFT, and the merged fp32 model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from catrl.hf_policy import resolve_policy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hf = resolve_policy("smollm2-135m")
    d = tmp_path_factory.mktemp("lora")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32), LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # PEFT starts B at zero, which would make the adapter a no-op
    peft_model.save_pretrained(d / "adapter")
    merged = peft_model.merge_and_unload().eval()
    base = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    return d, merged, base


def _hf_logprobs(model, ids: list[int], start: int) -> np.ndarray:
    """Log-probability of ids[start:] under `model`, teacher-forced (what LlamaCppEngine.score returns)."""
    import torch

    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return np.array([lp[i, ids[i + 1]].item() for i in range(start - 1, len(ids) - 1)])


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)[0, len(prompt):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return out[: next((i for i, t in enumerate(out) if t in eos), len(out))]  # llama.cpp stops before an end token


@pytest.mark.real_model
def test_llamacpp_with_the_adapter_matches_the_merged_model(smol_lora, smol_path, monkeypatch):
    from catrl.engines.llamacpp import LlamaCppEngine
    from catrl.types import ChatRequest, Sampling

    d, merged, base_hf = smol_lora
    lora = adapter_to_gguf(d / "adapter", smol_path, d / "adapter.gguf")
    monkeypatch.setattr(lora_gguf, "PERMUTES_QK", set())
    unpermuted = adapter_to_gguf(d / "adapter", smol_path, d / "unpermuted.gguf")
    kw = dict(max_seqs=2, n_ctx_seq=512, n_threads=1)
    engines = {k: LlamaCppEngine("smollm2-135m", lora_path=p, **kw) for k, p in [("base", None), ("adapted", lora), ("unpermuted", unpermuted)]}
    try:
        ids = {k: e.identity for k, e in engines.items()}
        assert ids["adapted"].startswith(ids["base"] + ":lora-") and len(set(ids.values())) == 3

        req = ChatRequest.user(PROMPTS[0])
        eng = engines["adapted"]
        prompt = eng.tokenize_prompt(req)
        tokens = prompt + eng._model.tokenize(CONTINUATION.encode(), add_bos=False, special=False)
        merged_lp = _hf_logprobs(merged, tokens, len(prompt))
        err = {k: np.abs(np.array([t.logprob for t in e.score([req], [CONTINUATION])[0].tokens]) - merged_lp) for k, e in engines.items()}
        # measured: adapted 0.032 mean / 0.116 max; base 0.256 / 1.62; unpermuted 0.230 / 1.03 (llama.cpp's
        # Q4_1 base alone is 0.046 / 0.25 off transformers' dequantized copy)
        assert err["adapted"].mean() < 0.08 and err["adapted"].max() < 0.35, err["adapted"]
        assert err["base"].mean() > 3 * err["adapted"].mean() and err["unpermuted"].mean() > 3 * err["adapted"].mean(), err

        reqs = [ChatRequest.user(p) for p in PROMPTS]
        greedy = {k: [c[0].text for c in e.generate(reqs, Sampling(temperature=0, max_tokens=16))] for k, e in engines.items()}
        want = [eng._model.detokenize(_hf_greedy(merged, eng.tokenize_prompt(r), 16)).decode() for r in reqs]
        assert greedy["adapted"] == want  # measured: identical, 16 tokens each
        assert all(a != b for a, b in zip(greedy["base"], want)), (greedy["base"], want)
        base_greedy = [eng._model.detokenize(_hf_greedy(base_hf, eng.tokenize_prompt(r), 16)).decode() for r in reqs]
        assert base_greedy != want  # the adapter changes transformers' answers too, so the comparison has teeth
    finally:
        for e in engines.values():
            e.close()


@pytest.mark.real_model
def test_engine_refuses_a_missing_or_foreign_adapter(tmp_path, smol_path):
    from catrl.engines.llamacpp import LlamaCppEngine

    with pytest.raises(InputError, match="LoRA GGUF not found"):
        LlamaCppEngine("smollm2-135m", lora_path=tmp_path / "none.gguf", max_seqs=1, n_ctx_seq=256, n_threads=1)
    foreign = adapter_to_gguf(_adapter(tmp_path / "ad"), _base(tmp_path / "b.gguf", "qwen2"), tmp_path / "qwen.gguf")
    with pytest.raises(InputError, match="could not load this LoRA"):
        LlamaCppEngine("smollm2-135m", lora_path=foreign, max_seqs=1, n_ctx_seq=256, n_threads=1)


@pytest.mark.real_model
def test_answer_with_a_trained_adapter_keeps_the_anchor_frozen(smol_lora, smol_path, tmp_path):
    """`catrl answer --adapter DIR`: the rollouts come from the adapted policy, the synthesis from the base model."""
    import sqlite3
    import subprocess
    import sys

    adapter = smol_lora[0] / "adapter"
    cache = tmp_path / "c.sqlite"
    cmd = [sys.executable, "-m", "catrl.cli", "answer", "What is 7 times 6?", "-g", "2", "--max-tokens", "24", "--model", "smollm2-135m",
           "--adapter", str(adapter), "--cache", str(cache), "--max-seqs", "4", "--ctx", "1024"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(cache) as db:
        kinds = dict(db.execute("SELECT engine, GROUP_CONCAT(DISTINCT kind) FROM calls GROUP BY engine").fetchall())
    adapted = [e for e in kinds if ":lora-" in e]
    assert len(kinds) == 2 and len(adapted) == 1, kinds  # the rollouts under the adapter, the synthesis on the base model
    base = next(e for e in kinds if e not in adapted)
    assert adapted[0].startswith(base + ":lora-")

    r = subprocess.run([*cmd[:-8], "--base-url", "http://127.0.0.1:9/v1", "--adapter", str(adapter)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 2 and "--lora-modules" in r.stdout + r.stderr
    r = subprocess.run([*cmd[:-8], "--adapter", str(tmp_path)], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 2 and "not a PEFT LoRA directory" in r.stdout + r.stderr
