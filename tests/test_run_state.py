"""The portable run state (catrl.run_state) and the time budget: a run that moves between machines in git."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from catrl.errors import InputError
from catrl.run_state import (CHECKPOINT_FILES, LIMIT_BYTES, check_same_config, config_differences, read_manifest, restore_state, save_state,
                             state_step)
from catrl.train_config import TrainConfig, load_config


def fake_checkpoint(run: Path, step: int) -> Path:
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        (ckpt / f).write_bytes(f"{f} of step {step}".encode())
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpt / "tokenizer.json").write_text("{}")  # what a resume does not need stays behind
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "step_time": 10.0 + s}) + "\n" for s in range(1, step + 1)))
    (run / "audit.jsonl").write_text("".join(json.dumps({"step": s, "rewards": [1.0, 0.0]}) + "\n" for s in range(1, step + 1)))
    (run / "starts.jsonl").write_text(json.dumps({"from_step": 0}) + "\n")
    return ckpt


CFG = TrainConfig(state_dir="state").to_dict()


def test_state_holds_only_what_a_resume_needs_and_restores_it_whole(tmp_path):
    run, state = tmp_path / "run", tmp_path / "state"
    ckpt = fake_checkpoint(run, 3)
    manifest = save_state(ckpt, run, state, CFG)
    assert manifest["step"] == 3 and manifest["bytes"] < LIMIT_BYTES
    assert sorted(p.name for p in state.iterdir()) == sorted([*CHECKPOINT_FILES, "metrics.jsonl", "starts.jsonl", "audit.jsonl.gz", "state.json"])
    assert gzip.decompress((state / "audit.jsonl.gz").read_bytes()) == (run / "audit.jsonl").read_bytes()
    fresh = tmp_path / "clone"
    got = restore_state(state, fresh, CFG)
    assert got == fresh / "checkpoint-3"
    assert all((got / f).read_bytes() == (ckpt / f).read_bytes() for f in CHECKPOINT_FILES)
    assert (fresh / "audit.jsonl").read_bytes() == (run / "audit.jsonl").read_bytes()
    assert (fresh / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    assert state_step(state) == 3 and state_step(tmp_path / "none") is None


def test_only_the_latest_state_is_kept_and_a_kill_mid_swap_leaves_the_old_one(tmp_path):
    run, state = tmp_path / "run", tmp_path / "state"
    save_state(fake_checkpoint(run, 1), run, state, CFG)
    save_state(fake_checkpoint(run, 2), run, state, CFG)
    assert state_step(state) == 2 and not (tmp_path / "state.old").exists() and not (tmp_path / "state.tmp").exists()
    state.rename(tmp_path / "state.old")  # killed between the two renames
    d, manifest = read_manifest(state)
    assert d.name == "state.old" and manifest["step"] == 2


def test_a_state_from_another_config_names_the_fields_that_differ(tmp_path):
    run, state = tmp_path / "run", tmp_path / "state"
    save_state(fake_checkpoint(run, 2), run, state, CFG)
    other = {**CFG, "learning_rate": 1e-4, "lora_r": 4, "output_dir": "elsewhere", "max_minutes": 30.0}  # the last two may change
    with pytest.raises(InputError, match=r"learning_rate: 1e-05 -> 0\.0001; lora_r: 16 -> 4\. Resume with the saved config") as e:
        restore_state(state, tmp_path / "clone", other)
    assert "output_dir:" not in str(e.value) and "max_minutes:" not in str(e.value)
    assert not (tmp_path / "clone").exists()  # nothing written
    assert config_differences(CFG, {**CFG, "threads": 2, "anchor_base_url": "http://x"}) == []
    older = {k: v for k, v in CFG.items() if k != "min_support"}  # saved by a catrl that had no min_support: it paid as 1 does
    assert config_differences(older, CFG) == [] and config_differences(older, {**CFG, "min_support": 2}) == ["min_support: 1 -> 2"]
    assert config_differences({**CFG, "field_of_a_later_catrl": 3}, CFG) == []  # unknown here: not compared
    check_same_config(CFG, {**CFG, "output_dir": "b"}, "here")


def test_a_corrupted_or_truncated_state_is_refused_and_nothing_is_overwritten(tmp_path):
    run, state = tmp_path / "run", tmp_path / "state"
    save_state(fake_checkpoint(run, 2), run, state, CFG)
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "metrics.jsonl").write_text("mine\n")
    opt = state / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:5])  # truncated
    with pytest.raises(InputError, match=r"optimizer\.pt: corrupted or truncated .*Nothing was overwritten"):
        restore_state(state, clone, CFG)
    assert (clone / "metrics.jsonl").read_text() == "mine\n" and not (clone / "checkpoint-2").exists()
    (state / "state.json").write_text("{not json")
    with pytest.raises(InputError, match=r"state\.json: not a readable run state"):
        restore_state(state, clone, CFG)
    (state / "state.json").write_text(json.dumps({"format": 1, "step": 2, "files": {}, "config": CFG}))
    with pytest.raises(InputError, match="the state lacks adapter_model.safetensors"):
        restore_state(state, clone, CFG)


def test_a_checkpoint_without_lora_cannot_become_a_state(tmp_path):
    run = tmp_path / "run"
    ckpt = fake_checkpoint(run, 1)
    (ckpt / "adapter_model.safetensors").unlink()
    with pytest.raises(InputError, match="needs a LoRA checkpoint"):
        save_state(ckpt, run, tmp_path / "state", CFG)
    with pytest.raises(InputError, match=r"'state_dir' = 's' needs LoRA"):
        load_config(None, ["state_dir=s", "lora_r=0"])
    with pytest.raises(InputError, match=r"'max_minutes' = -1.0 must be > 0"):
        load_config(None, ["max_minutes=-1"])


def test_control_rewards_are_valid_config_choices():
    assert load_config(None, ["reward=random"]).reward == "random"
    assert load_config(None, ["reward=format"]).reward == "format"
    with pytest.raises(InputError, match="majority or format with task math"):
        load_config(None, ["reward=format", "task=freeform", "dataset=healthbench"])


# -- the time budget ------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_budget_stops_before_the_step_that_would_not_fit():
    pytest.importorskip("transformers")
    from catrl.time_budget import budget_callback

    clock = Clock()
    cb = budget_callback(max_seconds=100.0, started=0.0, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=50)
    clock.t = 10.0  # model loading
    cb.on_train_begin(None, state, None)
    for step, t in enumerate([30.0, 50.0, 70.0, 90.0], 1):  # steps of 20 s: after the fourth, 90 + 20 > 100
        clock.t = t
        state.global_step = step
        control = SimpleNamespace(should_save=False, should_training_stop=False)
        cb.on_step_end(None, state, control)
        assert (control.should_save, control.should_training_stop) == ((True, True) if step == 4 else (False, False))
    assert cb.stopped_at == 4 and cb.step_seconds == [20.0] * 4


def test_budget_does_not_claim_a_stop_on_the_last_step():
    pytest.importorskip("transformers")
    from catrl.time_budget import budget_callback

    clock = Clock()
    cb = budget_callback(max_seconds=1.0, started=0.0, clock=clock)
    cb.on_train_begin(None, None, None)
    clock.t = 5.0
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(None, SimpleNamespace(global_step=4, max_steps=4), control)
    assert cb.stopped_at is None and not control.should_training_stop  # finished, not stopped: export as usual


def test_a_budget_shorter_than_one_measured_step_is_refused_before_training(tmp_path):
    pytest.importorskip("transformers")
    from catrl.time_budget import check_budget, median_step_seconds

    fake_checkpoint(tmp_path, 3)  # step times 11, 12, 13 s
    assert median_step_seconds(tmp_path / "metrics.jsonl") == 12.0
    clock = Clock()
    clock.t = 5.0
    with pytest.raises(InputError, match=r"max_minutes=0.25 leaves 10 s after setup, less than one step \(a median 12 s"):
        check_budget(TrainConfig(max_minutes=0.25), tmp_path, started=0.0, clock=clock)
    check_budget(TrainConfig(max_minutes=1), tmp_path, started=0.0, clock=clock)
    check_budget(TrainConfig(max_minutes=0.01), tmp_path / "new", started=0.0, clock=clock)  # no step measured yet: one runs
