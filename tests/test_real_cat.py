"""Test-time CaT with a real model (SmolLM2-135M as policy and anchor): every model-facing path
of synthesis, the baselines, eval, answer and label runs once for real."""

import json
import subprocess
import sys

import pytest

from catrl.cache import CallCache
from catrl.evaluate import EvalConfig, run_eval, summarize
from catrl.rewards import CaTReward
from catrl.types import Sampling

pytestmark = pytest.mark.real_model
SMALL = dict(max_tokens=48, seed=0)


def test_eval_all_methods_on_a_real_model(smol_engine):
    cfg = EvalConfig(
        dataset="gsm8k", limit=2, g=3,
        sampling=Sampling(temperature=0.7, top_p=0.8, top_k=20, logprobs=True, **SMALL),
        anchor_sampling=Sampling(temperature=0.7, top_p=0.8, top_k=20, **SMALL),
        methods=("single", "majority", "min_ppl", "self_bon", "usc", "mutual", "cat"), g_sweep=(1, 3),
    )
    results = run_eval(smol_engine, smol_engine, cfg)
    assert len(results) == 2
    for r in results:
        assert set(r.methods) == {"single", "majority", "min_ppl", "self_bon", "usc", "mutual", "cat"}
        assert len(r.rollouts) == 3 and all(x["mean_nll"] > 0 for x in r.rollouts)
        assert r.reference["text"] and r.question not in r.reference["prompt"][-1]["content"]
        assert set(r.sweep) == {"1", "3"}
    s = summarize(results)
    assert s["methods"]["cat"]["n"] == 2


def test_eval_with_a_selector_engine_on_other_kernels(smol_engine):
    """The policy's judgments on a second real engine (same weights, flash attention off), as
    bench/cat_quality runs them; the policy engine only samples."""
    from catrl.engines.llamacpp import LlamaCppEngine

    reader = LlamaCppEngine("smollm2-135m", max_seqs=4, n_ctx_seq=1024, flash_attn=False)
    try:
        cfg = EvalConfig(dataset="gsm8k", limit=1, g=2, sampling=Sampling(temperature=0.7, logprobs=True, **SMALL),
                         anchor_sampling=Sampling(temperature=0.7, **SMALL), methods=("min_ppl", "self_bon", "usc", "mutual", "cat"), g_sweep=())
        (r,) = run_eval(smol_engine, reader, cfg, selector=reader)
        assert set(r.methods) == set(cfg.methods) and reader.identity.endswith(":nofa")
        assert all(m["index"] in (0, 1) for k, m in r.methods.items() if k != "cat")
    finally:
        reader.close()


def test_cat_reward_on_a_real_anchor(smol_engine):
    rec = CaTReward(smol_engine, sampling=Sampling(**SMALL))(None, ["3 + 4 = 7. \\boxed{7}", "\\boxed{7}", "\\boxed{8}"])
    assert len(rec.rewards) == 3 and set(rec.rewards) <= {0.0, 1.0}
    assert rec.reference.text and ("no_reference_answer" in rec.flags or rec.reference.answer is not None)


def test_corroborated_cat_reward_on_a_real_anchor(smol_engine):
    """min_support=2 on real references: a group pays two or more rollouts, or none; a lone match is flagged."""
    groups = [["3 + 4 = 7. \\boxed{7}", "\\boxed{7}", "\\boxed{8}"], ["\\boxed{5}", "\\boxed{6}", "so \\boxed{9}"]]
    for rec in CaTReward(smol_engine, sampling=Sampling(**SMALL), min_support=2).score_groups([None, None], groups):
        matched = sum(rec.matches)
        assert sum(rec.rewards) == (matched if matched != 1 else 0)
        assert (matched == 1) == ("uncorroborated:1<2" in rec.flags)


def test_a_group_too_long_for_the_anchor_is_flagged_and_the_others_are_scored(smol_engine):
    """The defined outcome when a group outgrows the anchor's context (here 1,024 tokens): that group
    scores 0 with flags naming why; the other group of the same batched call is scored as usual."""
    long = [" ".join(f"w{i + 7 * k}" for i in range(400)) + " \\boxed{7}" for k in range(3)]  # not repetitive: screening keeps it
    short = ["3 + 4 = 7. \\boxed{7}", "\\boxed{7}", "\\boxed{8}"]
    bad, ok = CaTReward(smol_engine, sampling=Sampling(**SMALL)).score_groups([None, None], [long, short])
    assert bad.rewards == [0.0] * 3 and bad.reference.text == "" and bad.reference.finish_reason == "prompt_too_long"
    assert bad.flags == ["reference_prompt_too_long", "no_reference_answer"]
    assert ok.reference.text and "reference_prompt_too_long" not in ok.flags


def _cli(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "catrl.cli", *args, "--model", "smollm2-135m", "--cache", str(tmp_path / "c.sqlite"),
                           "--max-seqs", "8", "--ctx", "1024"], capture_output=True, text=True, timeout=600)


def test_answer_and_label_commands(tmp_path, smol_path):
    r = _cli("answer", "What is 7 times 6?", "-g", "3", "--max-tokens", "40", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "majority answer" in r.stdout and "CaT answer" in r.stdout
    assert "CaT reference (cluster)" in r.stdout  # the default on math: the best measured estimator, cluster:order=both,min_support=2
    out = tmp_path / "labels.jsonl"
    r = _cli("label", "gsm8k", "--limit", "2", "-g", "2", "--max-tokens", "40", "-o", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == ["0", "1"] and all("reference" in x and "agreement" in x for x in rows)
    assert all(x["estimator"]["name"] == "cluster" and x["estimator"]["order"] == "both" and x["estimator"]["min_support"] == 2 for x in rows)
    r = _cli("label", "gsm8k", "--limit", "2", "-g", "2", "--max-tokens", "40", "-o", str(out), tmp_path=tmp_path)
    assert "2 already done" in r.stdout


def test_eval_command_writes_report(tmp_path, smol_path):
    r = _cli("eval", "--limit", "2", "-g", "2", "--max-tokens", "40", "--anchor-max-tokens", "40", "--sweep", "1,2",
             "--out", str(tmp_path / "ev"), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cat" in r.stdout and "majority" in r.stdout
    for f in ("results.jsonl", "summary.json", "report.html", "accuracy_vs_g.png"):
        assert (tmp_path / "ev" / f).exists()

    # the run's calls, exported and imported on "another machine" (a second cache), replay the eval with no model call
    export = tmp_path / "calls.jsonl.gz"
    base = [sys.executable, "-m", "catrl.cli", "cache"]
    r = subprocess.run([*base, "export", str(export), "--cache", str(tmp_path / "c.sqlite")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    other = tmp_path / "other"
    r = subprocess.run([*base, "import", str(export), "--cache", str(other / "c.sqlite")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "(0 already held)" in r.stdout, r.stdout + r.stderr
    held = CallCache(other / "c.sqlite").count()
    r = _cli("eval", "--limit", "2", "-g", "2", "--max-tokens", "40", "--anchor-max-tokens", "40", "--sweep", "1,2",
             "--out", str(other / "ev"), tmp_path=other)
    assert r.returncode == 0, r.stderr
    assert CallCache(other / "c.sqlite").count() == held > 0
    assert (other / "ev" / "results.jsonl").read_text() == (tmp_path / "ev" / "results.jsonl").read_text()


def test_anchor_of_its_own_with_flash_attention_off(tmp_path, smol_path):
    """--no-anchor-flash-attn gives the named anchor its own engine (identity ':nofa'); the policy keeps the default."""
    import sqlite3

    r = _cli("answer", "What is 7 times 6?", "-g", "2", "--max-tokens", "24", "--anchor-model", "smollm2-135m",
             "--no-anchor-flash-attn", "--estimator", "synthesis", tmp_path=tmp_path)  # synthesis: an anchor call even if the two agree
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        engines = dict(db.execute("SELECT engine, GROUP_CONCAT(DISTINCT kind) FROM calls GROUP BY engine").fetchall())
    anchor = [e for e in engines if e.endswith(":nofa")]
    assert len(anchor) == 1 and len(engines) == 2, engines  # the rollouts on the default engine, the synthesis on the other
    r = _cli("answer", "What is 7 times 6?", "--no-anchor-flash-attn", tmp_path=tmp_path)
    assert r.returncode == 2 and "--anchor-model" in r.stdout + r.stderr


def test_a_prompts_directory_replaces_the_synthesis_prompt_and_the_run_records_it(tmp_path, smol_path):
    """`catrl --prompts DIR`: the anchor is sent the user's synthesis prompt (seen in the audit record of
    every reference) and the run's summary names the directory and what it replaced."""
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "synthesis_reasoning.txt").write_text("MY-SYNTHESIS {{count}} candidates:\n{{candidates}}\nEnd with \\boxed{ANSWER}.", encoding="utf-8")
    r = _cli("--prompts", str(d), "eval", "--limit", "1", "-g", "2", "--max-tokens", "30", "--anchor-max-tokens", "30",
             "--methods", "majority,cat", "--sweep", "", "--estimator", "synthesis", "--out", str(tmp_path / "ev"), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    row = json.loads((tmp_path / "ev" / "results.jsonl").read_text().splitlines()[0])
    assert row["reference"]["prompt"][-1]["content"].startswith("MY-SYNTHESIS 2 candidates:")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["config"]["prompts"] == {"dir": str(d.resolve()), "replaced": ["synthesis_reasoning"]}


def test_estimator_flag_on_answer_label_and_eval(tmp_path, smol_path):
    """--estimator reaches the reference: answer prints which and whether it agrees with the vote, label
    records it per row, eval's summary and results carry it; a bad spec fails before any model loads."""
    r = _cli("answer", "What is 7 times 6?", "-g", "3", "--max-tokens", "40", "--estimator", "cluster", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "CaT reference (cluster)" in r.stdout and "majority vote" in r.stdout
    out = tmp_path / "labels.jsonl"
    r = _cli("label", "gsm8k", "--limit", "1", "-g", "2", "--max-tokens", "40", "-o", str(out), "--estimator", "permutation:k=2", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text().splitlines()[0])["estimator"] == {"name": "permutation", "seed": 0, "screen": True, "k": 2}
    r = _cli("eval", "--limit", "1", "-g", "2", "--max-tokens", "30", "--anchor-max-tokens", "30", "--methods", "majority,cat",
             "--sweep", "", "--estimator", "confidence_vote", "--out", str(tmp_path / "ev"), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["config"]["estimator"]["name"] == "confidence_vote"
    row = json.loads((tmp_path / "ev" / "results.jsonl").read_text().splitlines()[0])
    assert row["reference"]["estimator"]["name"] == "confidence_vote" and row["reference"]["prompt"] == []
    r = _cli("answer", "What is 7 times 6?", "-g", "2", "--estimator", "recursive:m=3", tmp_path=tmp_path)
    assert r.returncode != 0 and "m=3 is more than the group's 2" in r.stdout + r.stderr
