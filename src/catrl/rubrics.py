"""Self-proposed rubrics: the anchor turns a synthesized reference (or, for the paper's ablation,
the conversation itself) into specific, binary, checkable criteria.

The anchor answers in XML (<rubric><criterion>...</criterion>...</rubric>), read with a safe parser.
Defined outcomes: output that does not parse, or has fewer than `min_criteria` criteria, is asked
again with a new seed up to `retries` times; then the best attempt is kept with a flag
(`too_few_criteria`), or, with no criterion at all, an empty rubric flagged `rubric_parse_error`
(every response then scores 0). Duplicates are dropped (`duplicates_removed`) and anything past
`max_criteria` is cut (`criteria_truncated`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from catrl import prompting
from catrl.delimit import format_conversation, wrap
from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.types import ChatRequest, Criterion, Message, Rubric, Sampling
from catrl.xmlout import last_block, text_of

MAX_CRITERION_CHARS = 1000


def rubric_request(
    reference: str | None = None, conversation: str | Sequence[Message] | None = None,
    min_criteria: int = 5, max_criteria: int = 20, id: str = "",
) -> ChatRequest:
    """From the reference (default), or from the conversation when no reference is given."""
    bounds = {"min_criteria": str(min_criteria), "max_criteria": str(max_criteria)}
    if reference is not None:
        return ChatRequest.user(prompting.render("rubric_from_reference", reference=wrap("reference", reference), **bounds), id=id)
    if conversation is None:
        raise InputError("a rubric needs a reference or a conversation")
    return ChatRequest.user(prompting.render("rubric_from_question", conversation=format_conversation(conversation), **bounds), id=id)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def parse_rubric(text: str, max_criteria: int = 20) -> tuple[list[Criterion], list[str]] | None:
    """(criteria, flags) from the anchor's output; None when there is no parseable <rubric> block."""
    block = last_block(text, "rubric")
    if block is None:
        return None
    flags: list[str] = []
    criteria: list[Criterion] = []
    seen: set[str] = set()
    for el in block.iter("criterion"):
        body = text_of(el)[:MAX_CRITERION_CHARS]
        key = _key(body)
        if not key:
            continue
        if key in seen:
            if "duplicates_removed" not in flags:
                flags.append("duplicates_removed")
            continue
        seen.add(key)
        criteria.append(Criterion(body))
    if len(criteria) > max_criteria:
        criteria = criteria[:max_criteria]
        flags.append("criteria_truncated")
    return criteria, flags


def propose_rubrics(
    anchor: Engine,
    references: Sequence[str] | None = None,
    conversations: Sequence[str | Sequence[Message]] | None = None,
    *,
    from_question: bool = False,
    min_criteria: int = 5,
    max_criteria: int = 20,
    sampling: Sampling | None = None,
    retries: int = 2,
) -> list[Rubric]:
    """One rubric per reference (or per conversation with from_question=True), batched in one call per attempt."""
    if min_criteria < 1 or max_criteria < min_criteria:
        raise InputError(f"need 1 <= min_criteria <= max_criteria, got {min_criteria} and {max_criteria}")
    sources = conversations if from_question else references
    if sources is None:
        raise InputError("from_question=True needs conversations" if from_question else "propose_rubrics needs references")
    reqs = [
        rubric_request(conversation=s, min_criteria=min_criteria, max_criteria=max_criteria, id=str(i)) if from_question
        else rubric_request(reference=s, min_criteria=min_criteria, max_criteria=max_criteria, id=str(i))
        for i, s in enumerate(sources)
    ]
    sampling = sampling or Sampling(max_tokens=1024)
    source = "question" if from_question else "reference"
    best: list[Rubric | None] = [None] * len(reqs)
    todo = list(range(len(reqs)))
    for attempt in range(retries + 1):
        if not todo:
            break
        outs = anchor.generate([reqs[i] for i in todo], replace(sampling, seed=sampling.seed + attempt), n=1)
        still = []
        for i, (comp,) in zip(todo, outs, strict=True):
            parsed = parse_rubric(comp.text, max_criteria)
            crit, flags = parsed if parsed is not None else ([], ["rubric_parse_error"])
            if len(crit) < min_criteria:
                flags = [f for f in flags if f != "rubric_parse_error"] + (["too_few_criteria"] if crit else ["rubric_parse_error"])
            rubric = Rubric(crit, source, reqs[i].to_list(), comp.text, flags + ([f"attempts:{attempt + 1}"] if attempt else []))
            if best[i] is None or len(crit) > len(best[i].criteria):
                best[i] = rubric
            if len(crit) < min_criteria:
                still.append(i)
        todo = still
    return [r for r in best if r is not None]


def propose_rubric(
    anchor: Engine, reference: str | None = None, min_criteria: int = 5, *, from_question: bool = False,
    conversation: str | Sequence[Message] | None = None, max_criteria: int = 20, sampling: Sampling | None = None, retries: int = 2,
) -> Rubric:
    """One rubric from a reference, or from the conversation (from_question=True, the paper's ablation)."""
    return propose_rubrics(
        anchor, [reference] if reference is not None else None, [conversation] if conversation is not None else None,
        from_question=from_question, min_criteria=min_criteria, max_criteria=max_criteria, sampling=sampling, retries=retries,
    )[0]
