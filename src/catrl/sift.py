"""Sifting: the judge model reads a response piece by piece and marks the pieces aimed at a grader.

Patterns (catrl.guards.grader_directed_spans) catch the grader-directed text someone thought of; a
policy under RL finds the rest: another language, a JSON verdict, a fake end marker, a polite plea.
Here the judge model itself reads each sentence or line, as a generative classifier: how much likelier
is the piece as something slipped in to get a grader to approve a reply (prompts/sift_grader.txt) than
as a piece of an answer to the person (prompts/sift_answer.txt)? The log-likelihood ratio comes from
teacher forcing, so nothing is generated or parsed, and the piece is never an instruction the model
is asked to follow: it is only ever the continuation being scored. Pieces whose ratio is above
`threshold` nats are cut from the counterfactual text the judge reads again (judge_guards: a criterion
counts only when both readings meet it).

Why a likelihood ratio and not a Yes/No question: on the design pieces (docs/reward_hacking) the 1.5B
judge's Yes/No answers ranked grader-directed pieces above honest ones with AUC 0.56-0.88 and no
usable threshold; the ratio ranked them with AUC 0.99. Pieces with no letters (list numbers, rules,
emoji) are never cut and cost no call. The model calls are at the edge (`score_pieces`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from catrl import prompting
from catrl.engines.base import Engine
from catrl.guards import grader_directed_spans, sentence_spans, strip_spans, visible
from catrl.types import ChatRequest

THRESHOLD = 6.0   # nats: set on the design pieces (docs/reward_hacking), where no honest piece passed it
MAX_PIECE = 400   # characters scored as one piece; longer sentences are read in parts


@dataclass(frozen=True)
class Reader:
    """Who reads the response, so what bait looks like to it: the prompt a bait piece is likely under, the
    prompt an honest piece is likely under, and the log-likelihood ratio above which a piece is cut."""

    bait: str
    honest: str
    threshold: float


JUDGE = Reader("sift_grader", "sift_answer", THRESHOLD)         # a free-form response, read by the rubric judge
# a math rollout, read by the anchor (estimators' sift=1); 7.0 by a rule fixed before scoring: the smallest
# 0.5 multiple at least 1 nat above every design-honest GSM8K sentence (docs/reward_hacking/sift_anchor)
ANCHOR = Reader("sift_anchor", "sift_solution", 7.0)


@dataclass
class Sifted:
    """One response: the text the judge reads again, and what was cut."""

    text: str                                             # the response without grader-directed pieces
    cut: list[str] = field(default_factory=list)          # the pieces the model marked
    patterned: int = 0                                     # sentences the patterns marked (not scored)
    llr: dict[str, float] = field(default_factory=dict)   # per scored piece: log P(as grader bait) - log P(as answer)
    spans: list[tuple[int, int]] = field(default_factory=list)  # what was cut (pieces and patterns' sentences), in visible(response)

    @property
    def changed(self) -> bool:
        return bool(self.cut or self.patterned)


def pieces(text: str) -> list[tuple[int, int]]:
    """Spans of `visible(text)` to score one by one: its sentences and lines (guards.sentence_spans) that hold
    a letter, in parts of at most MAX_PIECE characters (cut at a space where there is one)."""
    v = visible(text)
    out = []
    for a, b in sentence_spans(v):
        while b - a > MAX_PIECE:
            cut = v.rfind(" ", a + 1, a + MAX_PIECE)
            cut = cut if cut > a else a + MAX_PIECE
            out.append((a, cut))
            a = cut + (v[cut] == " ")
        out.append((a, b))
    return [(a, b) for a, b in out if any(ch.isalpha() for ch in v[a:b])]


@lru_cache(maxsize=4)
def _requests(reader: Reader) -> tuple[ChatRequest, ChatRequest]:
    return ChatRequest.user(prompting.render(reader.bait)), ChatRequest.user(prompting.render(reader.honest))


def score_pieces(engine: Engine, texts: Sequence[str], reader: Reader = JUDGE) -> dict[str, float]:
    """log P(piece | bait prompt) - log P(piece | honest prompt), summed over its tokens, for every distinct
    piece (each scored once, however many responses hold it). All bait scorings first, then all honest
    scorings, so consecutive calls share their prompt and the engine reuses it."""
    todo = list(dict.fromkeys(texts))
    if not todo:
        return {}
    bait, honest = _requests(reader)
    scored = engine.score([bait] * len(todo) + [honest] * len(todo), todo + todo)
    total = [sum(t.logprob for t in sc.tokens) for sc in scored]
    return {t: total[k] - total[len(todo) + k] for k, t in enumerate(todo)}


def sift_many(engine: Engine, responses: Sequence[str], reader: Reader = JUDGE) -> list[Sifted]:
    """Each response with the pieces the reading model (and the patterns) mark as bait cut."""
    views = [visible(r) for r in responses]
    marked = [grader_directed_spans(r) for r in responses]
    unread = [[s for s in pieces(r) if not _overlaps(s, m)] for r, m in zip(responses, marked, strict=True)]
    llr = score_pieces(engine, [v[a:b] for v, sp in zip(views, unread, strict=True) for a, b in sp], reader)
    out = []
    for r, v, sp, m in zip(responses, views, unread, marked, strict=True):
        mine = {v[a:b]: llr[v[a:b]] for a, b in sp}
        cut = [(a, b) for a, b in sp if llr[v[a:b]] > reader.threshold]
        if not cut and not m:
            out.append(Sifted(r, llr=mine))
            continue
        spans = sorted(cut + m)
        out.append(Sifted(strip_spans(v, spans), [v[a:b] for a, b in cut], len(m), mine, spans))
    return out


def sift_groups(engine: Engine, groups: Sequence[Sequence[str]], reader: Reader,
                read: Callable[[int, int, str], bool]) -> list[list[Sifted]]:
    """Per group, per text: sifted in one scoring pass where `read(group, index, text)`, else unchanged
    (texts another guard already gives 0 cost no scoring)."""
    todo = [t for gi, g in enumerate(groups) for i, t in enumerate(g) if read(gi, i, t)]
    done = dict(zip(todo, sift_many(engine, todo, reader), strict=True))
    return [[done.get(t) or Sifted(t) for t in g] for g in groups]


def _overlaps(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(span[0] < b and a < span[1] for a, b in spans)
