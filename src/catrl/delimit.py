"""Untrusted text (rollouts, responses, conversations, references) goes into prompts only inside
our own XML-like delimiters, and any tag in that text that could open or close one of them is
escaped first (`<candidate` -> `&lt;candidate`), so the text cannot end its block or fake one.
Ordinary `<` (as in `x < 3`) is left alone, so the model still reads math and prose as written."""

from __future__ import annotations

import re
from collections.abc import Sequence

TAGS = (
    "candidate", "problem", "conversation", "message", "response", "reference", "rubric", "criterion",
    "criteria", "verdicts", "verdict", "reason", "met", "choice", "answer", "piece",
)
_TAG = re.compile(r"<(\s*/?\s*)(" + "|".join(TAGS) + r")\b", re.IGNORECASE)


def escape_delimiters(text: str) -> str:
    """Neutralize anything that reads as one of our delimiter tags (<candidate>, </response>, ...)."""
    return _TAG.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)


def wrap(tag: str, text: str, **attrs: str) -> str:
    """`<tag a="1">\\n{escaped text}\\n</tag>`."""
    attr = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<{tag}{attr}>\n{escape_delimiters(text)}\n</{tag}>"


def format_candidates(texts: Sequence[str], numbered: bool = True) -> str:
    """Each text in its own <candidate> block, numbered from 1 (`id="1"`) unless `numbered` is False."""
    return "\n\n".join(wrap("candidate", t, **({"id": str(i)} if numbered else {})) for i, t in enumerate(texts, 1))


def as_messages(conversation: str | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """A conversation given as plain text is one user turn."""
    if isinstance(conversation, str):
        return [{"role": "user", "content": conversation}]
    return [dict(m) for m in conversation]


def format_conversation(conversation: str | Sequence[dict[str, str]]) -> str:
    """A chat (or plain text, as one user turn) as data: one <message role=...> block per turn."""
    return "\n".join(wrap("message", m["content"], role=m["role"]) for m in as_messages(conversation))
