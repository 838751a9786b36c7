"""CaT's synthesis step: the frozen anchor reads G rollouts (never the question, unless asked) and
writes one reference that reconciles them.

Rollouts are untrusted text: each goes inside <candidate> tags, and any tag in the rollout that
could close or open a delimiter is escaped first, so a rollout cannot end its own block.
"""

from __future__ import annotations

from collections.abc import Sequence

from catrl import prompting
from catrl.delimit import escape_delimiters, format_candidates
from catrl.engines.base import Engine, OnResult
from catrl.errors import InputError
from catrl.types import CONTEXT_BOUND, ChatRequest, Reference, Sampling
from catrl.verify import extract_answer

MODES = ("reasoning", "freeform")
def synthesis_request(rollouts: Sequence[str], mode: str = "reasoning", question: str | None = None, id: str = "",
                      numbered: bool = True) -> ChatRequest:
    """The anchor's chat request. The question is included only when given (the paper's ablation);
    `numbered=False` leaves the candidates' ids out (an ablation: does a number invite a pick?)."""
    if mode not in MODES:
        raise InputError(f"synthesis mode must be one of {MODES}, got {mode!r}")
    if not rollouts:
        raise InputError("cannot synthesize from an empty group of rollouts")
    values = {"count": str(len(rollouts)), "candidates": format_candidates(rollouts, numbered)}
    name = f"synthesis_{mode}"
    if question is not None:
        name += "_with_question"
        values["question"] = escape_delimiters(question)
    return ChatRequest.user(prompting.render(name, **values), id=id)


def synthesize_many(
    anchor: Engine,
    groups: Sequence[Sequence[str]],
    mode: str = "reasoning",
    sampling: Sampling | None = None,
    questions: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    on_result: OnResult | None = None,
) -> list[Reference]:
    """One reference per group, all groups sent to the anchor in one batched call."""
    sampling = sampling or Sampling(max_tokens=1024)
    reqs = [
        synthesis_request(g, mode, questions[i] if questions is not None else None, ids[i] if ids else str(i))
        for i, g in enumerate(groups)
    ]
    outs = anchor.generate(reqs, sampling, n=1, on_result=on_result)
    refs = []
    for req, (comp,) in zip(reqs, outs, strict=True):
        answer = extract_answer(comp.text) if mode == "reasoning" else None
        refs.append(Reference(text=comp.text, answer=answer, prompt=req.to_list(), finish_reason=comp.finish_reason))
    return refs


def reference_flags(reference: Reference) -> list[str]:
    """`reference_context` / `reference_prompt_too_long`: the anchor's engine had too little context
    for this group (its reference is cut or empty), which says to raise the context, not that the
    anchor failed."""
    return [f"reference_{reference.finish_reason}"] if reference.finish_reason in CONTEXT_BOUND else []


def synthesize(
    anchor: Engine,
    rollouts: Sequence[str],
    mode: str = "reasoning",
    include_question: bool = False,
    question: str | None = None,
    sampling: Sampling | None = None,
) -> Reference:
    """Synthesize one reference from one group. The anchor sees the question only with include_question=True."""
    if include_question and question is None:
        raise InputError("include_question=True needs the question")
    qs = [question] if include_question else None
    return synthesize_many(anchor, [rollouts], mode, sampling, questions=qs)[0]
