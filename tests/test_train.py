"""CaT-RL and CaT-SFT: config errors, label reading, resume bookkeeping (fast), and real GRPO and
SFT steps on the smallest embedded model (policy in transformers, anchor on llama.cpp)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from catrl.errors import InputError
from catrl.sft import read_labels
from catrl.train import keep_adapter, kept_adapters, last_checkpoint, prompt_rows, trim_after_step
from catrl.train_config import load_config


def test_config_file_and_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("policy: smollm2-135m\ng: 4\nlearning_rate: 2e-5\nlora_targets: [q_proj, v_proj]\n")
    cfg = load_config(p, ["steps=3", "output-dir=/tmp/x", "anchor=qwen2.5-coder-0.5b"])
    assert (cfg.policy, cfg.g, cfg.learning_rate, cfg.steps, cfg.output_dir) == ("smollm2-135m", 4, 2e-5, 3, "/tmp/x")
    assert cfg.lora_targets == ["q_proj", "v_proj"] and cfg.anchor == "qwen2.5-coder-0.5b"
    assert cfg.anchor_flash_attn is None and load_config(p, ["anchor_flash_attn=false"]).anchor_flash_attn is False


@pytest.mark.parametrize("text, overrides, message", [
    ("g: 4\nstepz: 3\n", [], r"run\.yaml:2: unknown field 'stepz'"),
    ("g: 4\nsteps: many\n", [], r"run\.yaml:2: field 'steps' must be int"),
    ("g: 1\n", [], r"field 'g' = 1 must be >= 2"),
    ("task: poetry\n", [], r"field 'task' = 'poetry' must be math or freeform"),
    ("g: [4\n", [], r"run\.yaml:\d+: not valid YAML"),
    ("- g\n", [], r"run\.yaml:1: the config must be a mapping"),
    ("g: 4\n", ["steps"], r"--set steps: expected key=value"),
    ("g: 4\n", ["nope=1"], r"--set nope=1: unknown field 'nope'"),
    ("g: 4\n", ["micro_batch=3"], r"'micro_batch' = 3 must divide"),
    ("anchor_timeout_s: 0\n", [], r"'anchor_timeout_s' = 0.0 must be > 0"),
    ("g: 4\nmin_support: 5\n", [], r"'min_support' = 5 must be from 1 \(no corroboration\) to g"),
    ("min_support: 0\n", [], r"'min_support' = 0 must be from 1"),
    ("reward: random\n", ["min_support=2"], r"'min_support' = 2 applies to the math rewards cat and majority only"),
    ("task: freeform\nreward: majority\n", [], r"field 'reward' = 'majority' must be cat or random, or majority or format with task math"),
    ("save_steps: 10\n", ["keep_adapter_steps=25"], r"'keep_adapter_steps' = 25 must be 0, or a multiple of save_steps"),
    ("lora_r: 0\nsave_steps: 5\n", ["keep_adapter_steps=5"], r"'keep_adapter_steps' = 5 must be 0, or a multiple of save_steps with LoRA"),
])
def test_config_errors_name_file_line_and_field(tmp_path, text, overrides, message):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(p, overrides)


def test_min_support_reaches_the_majority_reward(tmp_path):
    from catrl.train import build_reward

    func = build_reward(load_config(None, ["reward=majority", "min_support=2"]), tmp_path / "audit.jsonl")
    assert func.reward.min_support == 2 and build_reward(load_config(None, ["reward=majority"]), tmp_path / "a.jsonl").reward.min_support == 1


def test_rollouts_auto_picks_llamacpp_only_where_it_can_run_the_policy(tmp_path, monkeypatch):
    from catrl import train as train_mod

    monkeypatch.setattr(train_mod, "_no_accelerator", lambda: True)
    monkeypatch.setattr(train_mod, "policy_gguf", lambda policy: None if policy.startswith("/") else tmp_path / "p.gguf")
    assert train_mod.resolve_rollouts(load_config(None, ["policy=qwen2.5-coder-0.5b"])) == "llamacpp"
    assert train_mod.resolve_rollouts(load_config(None, ["lora_r=0"])) == "transformers"  # full fine-tuning: no adapter to convert
    assert train_mod.resolve_rollouts(load_config(None, [f"policy={tmp_path}/hf", "anchor=x"])) == "transformers"
    assert train_mod.resolve_rollouts(load_config(None, ["rollouts=transformers"])) == "transformers"
    with pytest.raises(InputError, match="'rollouts' = 'llamacpp' needs a GGUF policy"):
        train_mod.resolve_rollouts(load_config(None, [f"policy={tmp_path}/hf", "anchor=x", "rollouts=llamacpp"]))
    monkeypatch.setattr(train_mod, "_no_accelerator", lambda: False)
    assert train_mod.resolve_rollouts(load_config(None, [])) == "transformers"  # a GPU generates in transformers
    with pytest.raises(InputError, match=r"field 'rollouts' = 'vllm' must be auto, llamacpp or transformers"):
        load_config(None, ["rollouts=vllm"])


def test_prompt_rows_offset_gold_and_length_filter():
    cfg = load_config(None, ["dataset=gsm8k", "offset=2", "limit=3", "max_prompt_tokens=700"])
    rows, dropped = prompt_rows(cfg, lambda msgs: 10 * len(msgs[0]["content"].split()))
    assert len(rows) + dropped == 3 and dropped >= 1  # some GSM8K prompts exceed 40 words
    assert all(r["prompt"][0]["role"] == "user" and "\\boxed" in r["prompt"][0]["content"] for r in rows)
    assert all(r["gold"] and "####" not in r["gold"] for r in rows)  # the final answer only, for monitoring
    first, _ = prompt_rows(load_config(None, ["limit=3"]), lambda m: 0)
    offset, _ = prompt_rows(load_config(None, ["offset=2", "limit=1"]), lambda m: 0)
    assert [r["id"] for r in offset] == [first[2]["id"]]  # offset rows are disjoint from the first rows


def test_trim_after_step_drops_steps_after_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"step": s, "reward": s / 10}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "rew')
    trim_after_step(p, 2)
    assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [1, 2]


def test_last_checkpoint_skips_a_save_the_kill_interrupted(tmp_path):
    for step, state in ((1, '{"global_step": 1}'), (2, '{"global_step": 2}'), (3, None), (10, '{"global_')):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert last_checkpoint(tmp_path / "missing") is None


def test_kept_adapters_are_whole_copies_by_step(tmp_path):
    for step in (5, 10):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "adapter_model.safetensors").write_bytes(bytes([step]) * 8)
        (ckpt / "optimizer.pt").write_bytes(b"big")
        assert keep_adapter(ckpt, tmp_path / "adapters" / f"step-{step}") == tmp_path / "adapters" / f"step-{step}"
    (tmp_path / "adapters" / "step-15.tmp").mkdir()  # a copy a kill interrupted
    (tmp_path / "adapters" / "step-20").mkdir()  # not a whole adapter
    kept = kept_adapters(tmp_path)
    assert [s for s, _ in kept] == [5, 10]
    assert (kept[1][1] / "adapter_model.safetensors").read_bytes() == bytes([10]) * 8 and not (kept[1][1] / "optimizer.pt").exists()
    keep_adapter(tmp_path / "checkpoint-5", tmp_path / "adapters" / "step-10")  # again: replaced whole
    assert (kept[1][1] / "adapter_model.safetensors").read_bytes() == bytes([5]) * 8
    (tmp_path / "full").mkdir()
    assert keep_adapter(tmp_path / "full", tmp_path / "adapters" / "step-30") is None  # a full fine-tune has no adapter
    assert kept_adapters(tmp_path / "missing") == []


def test_accuracy_over_training_plot(tmp_path):
    from catrl.report.plots import plot_accuracy_over_training

    acc = lambda m: {"mean": m, "lo": m - 0.05, "hi": m + 0.05}  # noqa: E731
    png = plot_accuracy_over_training({"train": [(0, acc(0.2)), (50, acc(0.3)), (100, acc(0.4))],
                                       "held-out": [(100, acc(0.35)), (0, acc(0.2))]}, tmp_path / "a.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert plot_accuracy_over_training({"train": []}, tmp_path / "b.png") is None and not (tmp_path / "b.png").exists()


def test_read_labels_errors_and_skips(tmp_path):
    p = tmp_path / "labels.jsonl"
    p.write_text(json.dumps({"question": "1+1?", "reference": "2 \\boxed{2}", "answer": "2"}) + "\n"
                 + json.dumps({"question": "2+2?", "reference": "I am not sure", "answer": None}) + "\n")
    rows, skipped = read_labels(p, "solve")
    assert skipped == 1 and rows[0]["completion"][0]["content"] == "2 \\boxed{2}" and "1+1?" in rows[0]["prompt"][0]["content"]
    p.write_text(json.dumps({"question": "1+1?", "reference": "x"}) + "\n{broken\n")
    with pytest.raises(InputError, match=r"labels\.jsonl:2: not valid JSON"):
        read_labels(p, "solve")
    p.write_text(json.dumps({"question": "1+1?"}) + "\n")
    with pytest.raises(InputError, match=r"labels\.jsonl:1: field 'reference'"):
        read_labels(p, "solve")


# -- real models ---------------------------------------------------------------------------------
pytest.importorskip("trl")

SMOL = ["policy=smollm2-135m", "g=2", "prompts_per_step=2", "max_completion_tokens=24", "anchor_max_tokens=48",
        "limit=6", "dtype=fp32", "threads=2"]


@pytest.mark.real_model
@pytest.mark.slow
def test_two_real_grpo_steps_see_whole_groups(tmp_path, smol_path):
    """Two GRPO steps; micro-batches of 1 completion (< G) with gradient accumulation 4: every
    reward call still gets the whole generation batch of whole groups (TRL #3896)."""
    from catrl.train import train

    cfg = load_config(None, SMOL + ["steps=2", "save_steps=2", "micro_batch=1", f"output_dir={tmp_path / 'run'}"])
    res = train(cfg, progress=False)
    run = tmp_path / "run"
    assert res.steps == 2 and res.resumed_from is None
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all("cat/reward_mean" in m and "cat/synthesis_seconds" in m and "reward" in m for m in metrics)
    # where the step's time went: llama.cpp sampling and the adapter sync, inside the step's own wall time
    assert all(0 < m["rollouts/generate_seconds"] + m["rollouts/sync_seconds"] < m["step_time"] for m in metrics)
    audit = [json.loads(x) for x in (run / "audit.jsonl").read_text().splitlines()]
    by_call: dict[int, list] = {}
    for row in audit:
        by_call.setdefault(row["call"], []).append(row["completions"])
    assert by_call == {0: [[0, 1], [2, 3]], 1: [[0, 1], [2, 3]]}  # one call per step, 2 whole groups of G=2
    assert all(len(r["rewards"]) == 2 and r["reference"]["prompt"] for r in audit)
    assert all(r["id"] and r["prompt"][0]["role"] == "user" and len(r["rollouts"]) == 2 for r in audit)
    assert [r["step"] for r in audit] == [1, 1, 2, 2]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "merged" / "config.json").is_file()
    assert (run / "curves.png").stat().st_size > 0 and (run / "config.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["rollouts"] == "llamacpp" and saved["dtype"] == "fp32"  # auto resolved: a GGUF policy with LoRA on a CPU
    (start,) = [json.loads(x) for x in (run / "starts.jsonl").read_text().splitlines()]
    assert start["from_step"] == 0 and start["rollouts"] == "llamacpp" and start["versions"]["torch"]
    assert all(m["completions/mean_length"] > 0 for m in metrics)
    # the run's own audit trail reads back and grades against gold afterwards (`catrl audit`)
    from catrl.report.html_audit import write_audit_html
    from catrl.run_audit import grade_group, read_audit, stretches

    rows = read_audit(run)
    graded = [grade_group(r) for r in rows]
    whole = stretches(graded, parts=2)[-1]
    assert (whole.groups, whole.graded, whole.rollouts) == (4, 4, 8) and whole.first_step == 1 and whole.last_step == 2
    assert whole.rewarded == sum(r > 0 for row in rows for r in row["rewards"])
    assert write_audit_html(rows, graded, stretches(graded, 2), run / "audit.html", "run").stat().st_size > 0


@pytest.mark.real_model
@pytest.mark.slow
def test_majority_baseline_trains_with_no_anchor(tmp_path, smol_path):
    """reward=majority (TTRL's pseudo-label): a real GRPO step whose audit shows the vote as the reference.
    It samples in transformers (rollouts: transformers), which keeps TRL's own generation path tested."""
    from catrl.train import train

    cfg = load_config(None, SMOL + ["steps=1", "save_steps=1", "reward=majority", "rollouts=transformers", f"output_dir={tmp_path / 'run'}"])
    res = train(cfg, progress=False)
    assert res.steps == 1
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "rewards/majority/mean" in metrics and "cat/synthesis_seconds" not in metrics
    assert "rollouts/generate_seconds" not in metrics  # transformers samples inside TRL's own step
    audit = [json.loads(x) for x in (tmp_path / "run" / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == 2 and all(r["reference"]["text"].startswith("majority vote:") and not r["reference"]["prompt"] for r in audit)


@pytest.mark.real_model
@pytest.mark.slow
def test_catrl_train_resumes_after_a_kill(tmp_path, smol_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "catrl", "train"] + sum((["-s", s] for s in SMOL + ["steps=3", "save_steps=1", "keep_adapter_steps=2", f"output_dir={run}"]), [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 400
    while not (run / "checkpoint-1" / "trainer_state.json").exists():
        assert first.poll() is None, "catrl train exited before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 400 s"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (run / "merged").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from step" in second.stdout
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]  # no step lost, none logged twice
    steps = [json.loads(x)["step"] for x in (run / "audit.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and set(steps) == {1, 2, 3} and len(steps) == 3 * steps.count(1)  # audited once each
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (run / "merged" / "config.json").is_file()
    kept = kept_adapters(run)  # every 2nd step; rotation (two kept) deletes checkpoints, not these
    assert [s for s, _ in kept] == [2] and not (run / "checkpoint-1").exists()
    assert (kept[0][1] / "adapter_model.safetensors").read_bytes() == (run / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    # started again once finished (a script resuming every stage): no step past `steps`, the same export
    weights = (run / "merged" / "model.safetensors").read_bytes()
    third = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "trained 3 steps" in third.stdout and not (run / "checkpoint-4").exists()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (run / "merged" / "model.safetensors").read_bytes() == weights
    starts = [json.loads(x) for x in (run / "starts.jsonl").read_text().splitlines()]  # each start and resume on record
    assert len(starts) == 3 and starts[0]["from_step"] == 0 and 1 <= starts[1]["from_step"] < 3 and starts[2]["from_step"] == 3
    assert all(s["dtype"] == "fp32" and s["versions"]["trl"] and s["machine"] for s in starts)


@pytest.mark.real_model
@pytest.mark.slow
def test_cat_sft_on_label_output(tmp_path, smol_path):
    from catrl.sft import SFTOptions, sft

    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "reference": f"{i}+{i}={2 * i}. \\boxed{{{2 * i}}}",
                                          "answer": str(2 * i)}) + "\n" for i in range(4)))
    merged = sft(labels, SFTOptions(policy="smollm2-135m", output_dir=str(tmp_path / "sft"), max_steps=2, batch_size=2, dtype="fp32"))
    assert (merged / "config.json").is_file() and (tmp_path / "sft" / "adapter" / "adapter_config.json").is_file()
    losses = [json.loads(x).get("loss") for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert any(isinstance(v, (int, float)) and v > 0 for v in losses)


@pytest.mark.real_model
def test_transformers_engine_generates_greedy_and_sampled(smol_path):
    """The engine that evaluates trained policies: greedy is deterministic, n samples per request."""
    from catrl.engines.transformers import TransformersEngine
    from catrl.hf_policy import resolve_policy
    from catrl.types import ChatRequest, Sampling

    eng = TransformersEngine(resolve_policy("smollm2-135m"), batch_size=3, dtype="fp32")
    reqs = [ChatRequest.user("What is 2+2?"), ChatRequest.user("Name a color.")]
    seen = []
    greedy = eng.generate(reqs, Sampling(temperature=0, max_tokens=16), on_result=lambda i, c: seen.append(i))
    again = eng.generate(reqs, Sampling(temperature=0, max_tokens=16))
    assert [g[0].text for g in greedy] == [g[0].text for g in again] and all(g[0].text.strip() for g in greedy)
    assert sorted(seen) == [0, 1] and all(0 < g[0].completion_tokens <= 16 for g in greedy)
    sampled = eng.generate(reqs, Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=8, seed=1), n=2)
    assert [len(g) for g in sampled] == [2, 2] and eng.identity.startswith("transformers:smollm2-135m:") and eng.identity.endswith(":fp32")


@pytest.mark.real_model
@pytest.mark.slow
def test_a_run_stopped_by_its_budget_resumes_from_its_portable_state_exactly(tmp_path, smol_path):
    """The run moves machines as its committed state: stopped by max_minutes after step 1, its run directory
    deleted (a fresh clone), resumed from the state alone; steps 2 and 3 equal an uninterrupted run's."""
    import torch
    from safetensors.torch import load_file

    from catrl.run_state import state_step
    from catrl.train import train

    base = SMOL + ["steps=3", "save_steps=1", "reward=random", "lora_r=1"]
    whole = train(load_config(None, base + [f"output_dir={tmp_path / 'a'}", f"state_dir={tmp_path / 'a_state'}"]), progress=False)
    assert whole.steps == 3 and not whole.stopped
    first = train(load_config(None, base + [f"output_dir={tmp_path / 'b'}", f"state_dir={tmp_path / 'b_state'}", "max_minutes=0.01"]), progress=False)
    assert first.stopped and first.steps == 1 and first.merged_dir is None and state_step(tmp_path / "b_state") == 1
    assert sum(p.stat().st_size for p in (tmp_path / "b_state").iterdir()) < 15 * 2**20
    shutil.rmtree(tmp_path / "b")  # the machine is gone; the state is all that is left
    cmd = [sys.executable, "-m", "catrl", "train"] + sum((["-s", s] for s in base + [f"output_dir={tmp_path / 'c'}", f"state_dir={tmp_path / 'b_state'}"]), [])
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 1" in resumed.stdout and "portable state" in resumed.stdout
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    c = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in c] == [1, 2, 3]  # step 1 came with the state
    assert any(m["grad_norm"] > 0 for m in a[1:])  # the steps compared learned something
    for ma, mc in zip(a[1:], c[1:], strict=True):
        assert mc["reward"] == ma["reward"] and mc["completions/mean_length"] == ma["completions/mean_length"]  # the same rollouts and rewards
        assert mc["loss"] == pytest.approx(ma["loss"], rel=1e-4, abs=1e-6) and mc["grad_norm"] == pytest.approx(ma["grad_norm"], rel=1e-3)
    rollouts = lambda run: [r["rollouts"] for r in map(json.loads, (run / "audit.jsonl").read_text().splitlines())]  # noqa: E731
    assert rollouts(tmp_path / "c") == rollouts(tmp_path / "a")
    wa, wc = (load_file(str(tmp_path / r / "adapter" / "adapter_model.safetensors")) for r in ("a", "c"))
    assert wa.keys() == wc.keys() and all(torch.allclose(wa[k], wc[k], rtol=1e-4, atol=1e-7) for k in wa)
    # the same command with another learning rate is another run: refused, naming the field, with nothing touched
    other = subprocess.run(cmd + ["-s", "learning_rate=1e-3"], capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "learning_rate" in other.stdout + other.stderr


@pytest.mark.real_model
@pytest.mark.slow
def test_a_step_with_no_advantage_skips_its_pass_and_learns_the_same(tmp_path, smol_path, monkeypatch):
    """Step 1's rewards vary, step 2's are all 1: its advantages are exactly 0, so its forward and backward
    pass is skipped (catrl.grpo_trainer). The adapter after both steps equals that of a run that computed
    the pass, because the skipped gradient was exactly zero and the optimizer still stepped."""
    import torch
    from safetensors.torch import load_file

    from catrl import control_rewards, grpo_trainer
    from catrl.train import train

    real = control_rewards.RandomReward.score_groups

    def first_varies_then_flat(self, questions, groups):
        recs = real(self, questions, groups)
        self.calls = getattr(self, "calls", 0) + 1
        for rec in recs:
            rec.rewards = [float(i % 2) for i in range(len(rec.rewards))] if self.calls == 1 else [1.0] * len(rec.rewards)
        return recs

    monkeypatch.setattr(control_rewards.RandomReward, "score_groups", first_varies_then_flat)
    base = SMOL + ["steps=2", "save_steps=2", "reward=random", "lora_r=1", "learning_rate=1e-3"]
    train(load_config(None, base + [f"output_dir={tmp_path / 'skip'}"]), progress=False)
    monkeypatch.setattr(grpo_trainer, "zero_signal", lambda *a: False)
    train(load_config(None, base + [f"output_dir={tmp_path / 'full'}"]), progress=False)
    metrics = {r: [json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("skip", "full")}
    assert [m["zero_advantage_skipped"] for m in metrics["skip"]] == [0.0, 1.0]
    assert [m["zero_advantage_skipped"] for m in metrics["full"]] == [0.0, 0.0]
    assert metrics["skip"][1]["loss"] == metrics["full"][1]["loss"] == 0.0
    assert metrics["skip"][0]["grad_norm"] > 0 and metrics["skip"][1]["grad_norm"] == metrics["full"][1]["grad_norm"] == 0.0
    ws, wf = (load_file(str(tmp_path / r / "adapter" / "adapter_model.safetensors")) for r in ("skip", "full"))
    assert ws.keys() == wf.keys() and all(torch.equal(ws[k], wf[k]) for k in ws)


def test_the_zero_advantage_skip_is_refused_where_it_could_change_what_is_learned():
    """Exactly-zero advantages and nothing else in the loss, and no dropout drawing from the RNG."""
    import torch

    from catrl.grpo_trainer import _draws_dropout, zero_signal

    zeros, some = {"advantages": torch.zeros(4)}, {"advantages": torch.tensor([0.0, 0.5, -0.5, 0.0])}
    assert zero_signal(zeros, 0.0, False) and not zero_signal(some, 0.0, False)
    assert not zero_signal(zeros, 0.04, False) and not zero_signal(zeros, 0.0, True)  # a KL or another term in the loss
    assert not zero_signal({"advantages": torch.full((4,), 1e-12)}, 0.0, False)  # near zero is not zero
    assert _draws_dropout(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.05)))
    assert not _draws_dropout(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0)))
