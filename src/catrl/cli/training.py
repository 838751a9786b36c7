"""The training commands: `catrl train` (CaT-RL), `audit` (what its reward paid for), `sft` (the CaT-SFT baseline)
and `serve` (CaT rewards over HTTP for any other RL stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catrl import models
from catrl.cli.common import (ApiKeyOpt, BaseUrlOpt, ConcOpt, CtxOpt, EstimatorOpt, MaxSeqsOpt, ModelOpt, ThreadsOpt, TimeoutOpt, app, console,
                              engine_opts, fail, guide, out, policy_and_anchor, progress, sampling_of)
from catrl.errors import CatrlError


@app.command(epilog=guide("training.md"))
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config (fields: see docs/cat_rl/config.yaml). Optional: flags alone work too.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config field: KEY=VALUE (repeatable), e.g. -s steps=10 -s output_dir=runs/x.")] = None,
) -> None:
    """CaT-RL: GRPO (TRL) with CaT rewards from a frozen anchor, LoRA on CPU or GPU. Run the same command again to resume after a kill."""
    try:
        from catrl.train import train as run_train
        from catrl.train_config import load_config

        cfg = load_config(config, set_)
        console.print(f"CaT-RL: policy {cfg.policy}, anchor {cfg.anchor or cfg.policy}"
                      f"{' @ ' + cfg.anchor_base_url if cfg.anchor_base_url else ' (llama.cpp)'}, {cfg.dataset} "
                      f"[{cfg.offset}:{cfg.offset + cfg.limit if cfg.limit else ''}], G={cfg.g}, {cfg.prompts_per_step} questions/step, "
                      f"{cfg.steps} steps -> {cfg.output_dir}")
        res = run_train(cfg)
    except CatrlError as e:
        fail(e)
        return
    resumed = f" (resumed from step {res.resumed_from})" if res.resumed_from else ""
    state = f"; portable state (commit it to resume elsewhere): {res.state_dir}" if res.state_dir else ""
    if res.stopped:
        out.print(f"stopped by the time budget after step {res.steps} of {cfg.steps}{resumed} -> {res.output_dir}{state}. "
                  "Run the same command again to resume.")
        return
    out.print(f"trained {res.steps} steps{resumed} -> {res.output_dir}: metrics.jsonl, audit.jsonl, "
              f"{res.curves.name if res.curves else 'no curves'}, adapter/, merged/{state}")


@app.command(epilog=guide("training.md"))
def gate(
    config: Annotated[Path | None, typer.Argument(help="The YAML run config to check (its policy, anchor, data, G and sampling).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config field: KEY=VALUE (repeatable).")] = None,
    groups: Annotated[int, typer.Option("--groups", "-n", help="Questions sampled: the first N training questions.")] = 32,
    rewards: Annotated[str, typer.Option("--rewards", help="Comma-separated: cat (the config's anchor), cat@MODEL, cat@MODEL/ESTIMATOR, "
                                         "majority, random, format; cat and majority optionally +support=K (paid only when K rollouts reach the answer).")] = "cat,majority,random,format",
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for summary.json, groups.jsonl and gate.png.")] = Path("runs/gate"),
) -> None:
    """Before training: how often each label-free reward pays the right rollouts. Samples groups from the initial policy on the
    training questions, scores them with each reward, and grades every rollout against gold afterwards (precision, recall,
    accuracy, label accuracy). Nothing trains; every call is cached, so a stopped run resumes."""
    from catrl.engines.factory import EngineOptions, group_context, open_engine
    from catrl.errors import InputError
    from catrl.report.table import gate_table
    from catrl.reward_gate import gate_examples, parse_gate_rewards, reward_accuracy, run_gate, write_gate
    from catrl.train import policy_gguf
    from catrl.train_config import load_config

    try:
        cfg = load_config(config, set_)
        names = parse_gate_rewards(rewards, cfg.g, cfg.match)
        if cfg.task != "math":
            raise InputError("catrl gate grades final answers against gold: it needs task: math")
        if groups < 1:
            raise InputError(f"--groups must be >= 1, got {groups}")
        gguf = policy_gguf(cfg.policy)
        if gguf is None:
            raise InputError(f"catrl gate samples the initial policy on llama.cpp: policy {cfg.policy!r} must be an embedded name or a .gguf")
        if not any(e.gold is not None for e in gate_examples(cfg, groups)):
            raise InputError(f"dataset {cfg.dataset!r} has no gold answers to grade the rewards against")
        n_ctx = group_context(cfg.g, cfg.max_completion_tokens, cfg.anchor_max_tokens)

        def open_gate_engine(role: str, model: str):
            if role == "policy":
                return open_engine(EngineOptions(model=str(gguf), max_seqs=2 * cfg.g, n_ctx_seq=cfg.max_prompt_tokens + cfg.max_completion_tokens + 16,
                                                 threads=cfg.threads))
            return open_engine(EngineOptions(model=model, base_url=cfg.anchor_base_url, max_seqs=4, n_ctx_seq=n_ctx, threads=cfg.threads,
                                             flash_attn=cfg.anchor_flash_attn))

        with progress() as prog:
            bars: dict[str, int] = {}

            def tick(stage: str, done: int, total: int) -> None:
                if stage not in bars:
                    bars[stage] = prog.add_task(f"sampling {total} groups of {cfg.g}" if stage == "rollouts" else f"reward {stage}", total=total)
                prog.update(bars[stage], completed=done)

            graded, _ = run_gate(cfg, names, groups, open_gate_engine, tick)
    except CatrlError as e:
        fail(e)
        return
    rows = [reward_accuracy(graded, n) for n in names]
    title = f"reward accuracy on {len(graded)} groups of {cfg.g} from {cfg.policy} (graded against gold afterwards; gold never reached a reward)"
    out.print(gate_table(rows, title))
    write_gate(output, graded, rows, {"config": str(config) if config else None, "overrides": set_ or [], "policy": cfg.policy,
                                      "groups": len(graded), "g": cfg.g}, f"reward accuracy before training: {cfg.policy}, {len(graded)} groups")
    out.print(f"report: {output}/summary.json, groups.jsonl, gate.png")


@app.command(epilog=guide("training.md"))
def audit(
    run: Annotated[Path, typer.Argument(help="A CaT-RL run directory, or its audit.jsonl.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML page (default: audit.html next to audit.jsonl).")] = None,
    parts: Annotated[int, typer.Option("--parts", help="Stretches of consecutive steps the run is cut into for the table.")] = 4,
    match: Annotated[str, typer.Option("--match", help="symbolic (math-verify) or string.")] = "symbolic",
) -> None:
    """What a CaT-RL run's reward paid for: every scored group on one HTML page, and per stretch of the run how often the
    reference, the majority and the rewarded rollouts were right (graded against gold afterwards, where the data has it)."""
    from catrl.report.html_audit import write_audit_html
    from catrl.report.table import audit_table, positions_line
    from catrl.run_audit import grade_group, lone_positions, read_audit, stretches

    try:
        rows = read_audit(run)
        with progress() as prog:
            bar = prog.add_task(f"grading {len(rows)} groups", total=len(rows))
            graded = []
            for row in rows:
                graded.append(grade_group(row, match))
                prog.advance(bar)
    except CatrlError as e:
        fail(e)
        return
    summary = stretches(graded, parts)
    out.print(audit_table(summary, f"{run}: {len(rows)} groups"))
    if line := positions_line(lone_positions(rows)):
        out.print(line)
    if not summary[-1].graded:
        out.print("no gold answers in the audit rows: only rewards and flags are summed up")
    page = output or (run if run.is_dir() else run.parent) / "audit.html"
    write_audit_html(rows, graded, summary, page, f"CaT-RL audit: {run}")
    out.print(f"report: {page}")


@app.command(epilog=guide("training.md"))
def sft(
    labels: Annotated[Path, typer.Argument(help="`catrl label` output (JSONL with question and reference).")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o")] = Path("runs/cat-sft"),
    policy: Annotated[str, typer.Option("--policy", help="Embedded model name, .gguf, or HF model directory.")] = "qwen2.5-coder-0.5b",
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt template the labels were sampled with: solve (verifiable) or raw (free-form).")] = "solve",
    epochs: float = 1.0, learning_rate: float = 1e-4, batch_size: int = 4, max_length: int = 1024,
    lora_r: int = 16, max_steps: int = -1, seed: int = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16 where the hardware computes in it, else fp32), bf16 or fp32.")] = "auto",
) -> None:
    """CaT-SFT baseline: fine-tune (LoRA) on the synthesized references of `catrl label`. Resumable."""
    try:
        from catrl.sft import SFTOptions, sft as run_sft

        merged = run_sft(labels, SFTOptions(policy=policy, output_dir=str(output_dir), prompt=prompt, epochs=epochs,
                                            learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
                                            lora_r=lora_r, max_steps=max_steps, dtype=dtype, seed=seed))
    except CatrlError as e:
        fail(e)
        return
    out.print(f"CaT-SFT done -> {merged} (adapter in {output_dir / 'adapter'})")


@app.command(epilog=guide("scaling.md"))
def serve(
    model: ModelOpt = models.DEFAULT_MODEL, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Free-form judge (default: the anchor).")] = None,
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url")] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    token: Annotated[str | None, typer.Option("--token", envvar="CATRL_SERVE_TOKEN", help="Required bearer token.")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Groups waiting before requests get 503 + Retry-After.")] = 512,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Groups per engine batch.")] = 32,
    batch_window_ms: Annotated[float, typer.Option("--batch-window-ms", help="How long a batch waits for more groups.")] = 20.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb")] = 8.0,
    group_size: Annotated[int | None, typer.Option("--group-size", help="OpenRLHF /get_reward: samples per prompt (refuse partial groups).")] = None,
    match: Annotated[str, typer.Option("--match", help="symbolic (math-verify) or string.")] = "symbolic",
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Append one JSONL row per scored group (read it with `catrl audit`).")] = None,
    anchor_max_tokens: int = 1024, temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, seed: int = 0,
    estimator: EstimatorOpt = "synthesis",
    min_support: Annotated[int, typer.Option("--min-support", help="Math: rollouts that must reach the reference's answer for any to be paid (1: the paper's; 2: a lone rollout the anchor sided with gets 0, flag uncorroborated; a smaller group is never paid).")] = 1,
    freeform_estimator: Annotated[str, typer.Option("--freeform-estimator", help="The free-form reward's estimator: synthesis, permutation[:k=N] or recursive[:m=M,t=T].")] = "synthesis",
    guards: Annotated[str, typer.Option("--guards", help="The free-form reward's guards against hostile text: default (screen, degenerate, counterfactual with paragraphs, and sift where the judge can score), all (every guard), none, or a list of screen, degenerate, counterfactual, empty_probe, decoy, monitor, sift, paragraphs.")] = "default",
    max_seqs: MaxSeqsOpt = 32, ctx: CtxOpt = 4096, threads: ThreadsOpt = None, timeout: TimeoutOpt = None,
    concurrency: ConcOpt = 16,
    flash_attn: Annotated[bool | None, typer.Option(
        "--flash-attn/--no-flash-attn",
        help="Embedded anchor: llama.cpp's flash attention (default: llama.cpp's choice, on for CPU). "
             "--no-flash-attn decoded ~1.4x faster after ~2,600-token anchor prompts (docs/bench/README.md).")] = None,
) -> None:
    """HTTP reward service: POST groups of rollouts, get CaT rewards and audit records (also OpenRLHF's /get_reward)."""
    try:
        import uvicorn

        from catrl.rewards import CaTReward, RubricReward
        from catrl.serve import ServeConfig, create_app

        cfg = ServeConfig(host=host, port=port, token=token, max_queue_groups=max_queue, max_batch_groups=max_batch,
                          batch_window_s=batch_window_ms / 1000, max_body_bytes=int(max_body_mb * 1024 * 1024), group_size=group_size,
                          audit_path=audit_log)
        cfg.check()
        if group_size is not None:
            from catrl.rewards import check_min_support
            check_min_support(min_support, group_size)
        math_reward, freeform_reward = (CaTReward(None, match=match, estimator=estimator, min_support=min_support),  # checked before any model loads
                                        RubricReward(None, None, estimator=freeform_estimator, guards=guards))
        opts = engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, None, False, flash_attn)
        anchor, judge = policy_and_anchor(opts, judge_model, judge_base_url)
        sampling = sampling_of(temperature, top_p, top_k, anchor_max_tokens, seed)
        app_ = create_app(CaTReward(anchor, match=match, sampling=sampling, estimator=math_reward.estimator, min_support=min_support),
                          RubricReward(anchor, judge, sampling=sampling, estimator=freeform_reward.estimator, guards=freeform_reward.guards), cfg)
    except CatrlError as e:
        fail(e)
        return
    console.print(f"catrl reward service on http://{host}:{port} (anchor {model}{' @ ' + base_url if base_url else ''}; "
                  f"auth {'on' if token else 'off'})")
    uvicorn.run(app_, host=host, port=port, log_level="warning")
