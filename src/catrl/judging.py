"""The judge: does a response meet each criterion of a rubric?

Two modes. `per_criterion` is the paper's: one call per (response, criterion). `batched` checks
all criteria of one response in one call, and re-asks one criterion at a time only for the
verdicts it failed to give. The judge is its own engine handle (any OpenAI-compatible model, or
the embedded default), called greedily. The response and conversation are data inside escaped
delimiters, and verdicts are read only from the judge's own output, so a response that carries
"<met>yes</met>" or "All criteria are met" changes nothing by structure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from catrl import prompting
from catrl.delimit import escape_delimiters, format_conversation, wrap
from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.types import ChatRequest, Criterion, Message, Rubric, Sampling, Verdict
from catrl.xmlout import last_block, text_of, yes_no

MODES = ("per_criterion", "batched")
Conversation = str | Sequence[Message]
_MET_TAIL = re.compile(r"<met>\s*(yes|no)\s*</met>\s*(?:</verdict>)?\s*$", re.IGNORECASE)


def criterion_request(conversation: Conversation, response: str, criterion: Criterion, prompt: str = "judge_criterion") -> ChatRequest:
    values = {"conversation": format_conversation(conversation), "response": escape_delimiters(response),
              "criterion": escape_delimiters(criterion.text)}
    if prompt == "healthbench_grader":
        values["points"] = f"{criterion.points:g}"
    return ChatRequest.user(prompting.render(prompt, **values))


def batched_request(conversation: Conversation, response: str, criteria: Sequence[Criterion]) -> ChatRequest:
    listed = "\n".join(wrap("criterion", c.text, id=str(i)) for i, c in enumerate(criteria, 1))
    return ChatRequest.user(prompting.render(
        "judge_batched", conversation=format_conversation(conversation), response=escape_delimiters(response),
        criteria=listed, count=str(len(criteria)),
    ))


def equivalence_request(conversation: Conversation, response: str, reference: str) -> ChatRequest:
    """The model-as-judge baseline reward: is the response equivalent to the reference?"""
    return ChatRequest.user(prompting.render(
        "judge_equivalence", conversation=format_conversation(conversation),
        reference=escape_delimiters(reference), response=escape_delimiters(response),
    ))


def parse_verdict(text: str) -> Verdict:
    """One <verdict><reason>..</reason><met>yes|no</met></verdict> from the judge's output."""
    block = last_block(text, "verdict")
    if block is not None:
        met = yes_no(text_of(block.find("met"))) if block.find("met") is not None else None
        if met is not None:
            return Verdict(met, text_of(block.find("reason"))[:500])
    m = _MET_TAIL.search(text.strip())  # a verdict cut short or missing its opening tag
    if m:
        return Verdict(m.group(1).lower() == "yes", "", None)
    return Verdict(None, text.strip()[-200:], "unparsed_verdict")


def parse_verdicts(text: str, count: int) -> list[Verdict]:
    """`count` verdicts from a batched answer; ids out of range or repeated are ignored, missing ones unparsed."""
    out = [Verdict(None, "", "unparsed_verdict") for _ in range(count)]
    block = last_block(text, "verdicts")
    if block is None:
        return out
    seen: set[int] = set()
    for pos, el in enumerate(block.iter("verdict"), 1):
        try:
            k = int(el.get("id", pos))
        except ValueError:
            continue
        if not 1 <= k <= count or k in seen:
            continue
        met_el = el.find("met")
        met = yes_no(text_of(met_el)) if met_el is not None else None
        if met is not None:
            seen.add(k)
            out[k - 1] = Verdict(met, text_of(el.find("reason"))[:500])
    return out


def judge_many(
    judge_engine: Engine,
    items: Sequence[tuple[Conversation, str, Rubric]],
    mode: str = "batched",
    sampling: Sampling | None = None,
    prompt: str = "judge_criterion",
) -> list[list[Verdict]]:
    """Verdicts for many (conversation, response, rubric) items; one engine call per round."""
    if mode not in MODES:
        raise InputError(f"judge mode must be one of {MODES}, got {mode!r}")
    verdicts: list[list[Verdict]] = [[Verdict(None, "", "unparsed_verdict") for _ in r.criteria] for _, _, r in items]
    if mode == "batched":
        todo = [i for i, (_, _, r) in enumerate(items) if r.criteria]
        reqs = [batched_request(items[i][0], items[i][1], items[i][2].criteria) for i in todo]
        outs = judge_engine.generate(reqs, sampling or _batched_sampling(items, todo), n=1)
        for i, (comp,) in zip(todo, outs, strict=True):
            verdicts[i] = parse_verdicts(comp.text, len(items[i][2].criteria))
    # per criterion: everything in per_criterion mode, only what the batched answer left open otherwise
    pairs = [(i, j) for i, v in enumerate(verdicts) for j, x in enumerate(v) if x.met is None]
    if pairs:
        reqs = [criterion_request(items[i][0], items[i][1], items[i][2].criteria[j], prompt) for i, j in pairs]
        outs = judge_engine.generate(reqs, sampling or Sampling(temperature=0, max_tokens=160), n=1)
        for (i, j), (comp,) in zip(pairs, outs, strict=True):
            v = parse_verdict(comp.text)
            if mode == "batched" and v.met is not None:
                v.flag = "per_criterion_fallback"
            verdicts[i][j] = v
    return verdicts


def _batched_sampling(items, todo) -> Sampling:
    most = max((len(items[i][2].criteria) for i in todo), default=1)
    return Sampling(temperature=0, max_tokens=64 + 60 * most)


def judge(judge_engine: Engine, conversation: Conversation, response: str, rubric: Rubric, mode: str = "per_criterion") -> list[Verdict]:
    """Yes/no and a short reason for every criterion of the rubric, for one response."""
    return judge_many(judge_engine, [(conversation, response, rubric)], mode)[0]
