"""Reading the XML blocks models are asked to answer in (rubrics, verdicts), with a safe parser.

Models wrap their XML in prose, leave `&` unescaped and sometimes stop mid-block, so: take the last
complete `<tag>...</tag>` block, escape bare ampersands, and parse it with defusedxml (no entity
expansion, no external entities, no DTDs). Anything that still fails is None: the caller decides
the defined outcome (retry, flag, reward 0)."""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)")
MAX_BLOCK_CHARS = 200_000  # a block longer than this is not a rubric or a verdict list


def last_block(text: str, tag: str) -> Element | None:
    """The last complete <tag>...</tag> block of `text` as an Element, or None."""
    end = text.rfind(f"</{tag}>")
    if end < 0:
        return None
    start = max(text.rfind(f"<{tag}>", 0, end), text.rfind(f"<{tag} ", 0, end))
    if start < 0 or end - start > MAX_BLOCK_CHARS:
        return None
    block = _BARE_AMP.sub("&amp;", text[start : end + len(tag) + 3])
    try:
        return fromstring(block, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        return None


def text_of(el: Element | None) -> str:
    """All text inside an element, nested tags flattened, whitespace collapsed."""
    if el is None:
        return ""
    return " ".join("".join(el.itertext()).split())


def yes_no(value: str) -> bool | None:
    v = value.strip().strip(".").lower()
    if v in {"yes", "true", "met", "1"}:
        return True
    if v in {"no", "false", "not met", "unmet", "0"}:
        return False
    return None
