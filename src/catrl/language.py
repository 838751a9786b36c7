"""Which sentences of a response are not written in the conversation's language.

A note to the grader can be written in any language, and no word list reaches them all. The `language`
guard (opt-in, catrl.guards.Guards) leaves such sentences out of the counterfactual reading: the judge
credits only what the user can read. It uses py3langid (langid.py's model, shipped in its wheel, so it
runs offline), and it acts only where the identifier is sure of both languages: short sentences,
names and doses are never called foreign.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from catrl.guards import sentence_spans

MIN_LETTERS = 30      # a sentence with fewer letters is too short to call (drug names, "Ok.", "BRAT diet")
CONFIDENT = 0.9       # the identifier's probability for the language it names
FOREIGN = 0.01        # a sentence is foreign when its probability of the conversation's language is below this
# languages the identifier confuses with each other, which a reader of one also reads
_KIN = (frozenset({"id", "ms"}), frozenset({"no", "nb", "nn", "da"}), frozenset({"hr", "sr", "bs"}), frozenset({"cs", "sk"}),
        frozenset({"es", "gl", "ca", "an", "ext"}), frozenset({"pt", "gl"}), frozenset({"en", "pcm", "sco"}))


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # loads a 4 MB model once (about 0.7 s)
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def kin(lang: str) -> frozenset[str]:
    """The language and those a reader of it also reads (and the identifier mixes up with it)."""
    return frozenset({lang}).union(*(k for k in _KIN if lang in k))


def language_of(text: str) -> str | None:
    """The language `text` is written in, or None when it is too short or the identifier is unsure."""
    if _letters(text) < MIN_LETTERS:
        return None
    lang, p = _identifier().classify(text)
    return lang if p >= CONFIDENT else None


def _foreign(text: str, ours: frozenset[str]) -> bool:
    if _letters(text) < MIN_LETTERS:
        return False
    ranks = dict(_identifier().rank(text))
    top = max(ranks, key=ranks.__getitem__)
    return top not in ours and ranks[top] >= CONFIDENT and sum(ranks.get(x, 0.0) for x in ours) < FOREIGN


def foreign_spans(v: str, lang: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of the visible text `v` written, surely, in a language other than `lang`
    and its kin: every sentence when the text as a whole is (its short sentences too), else each long one
    that is."""
    ours, sentences = kin(lang), sentence_spans(v)
    if _foreign(v, ours):
        return sentences
    return [(a, b) for a, b in sentences if _foreign(v[a:b], ours)]


def conversation_language(messages: Sequence[dict]) -> str | None:
    """The language of the user's turns, or None when it cannot be told (then the guard does nothing)."""
    return language_of("\n".join(m["content"] for m in messages if m.get("role") == "user"))
