"""Final-answer extraction and equivalence for verifiable tasks.

Extraction: the last \\boxed{...} (balanced braces), else GSM8K's "#### X", else "the answer is X".
Equivalence: `mode="symbolic"` (default) asks math-verify with the reference as gold; `mode="string"`
is the paper's plain boxed-string match. Model text is parsed, never evaluated: plain numbers are
compared directly, everything else goes to math-verify (sympy) in a worker process (verify_worker.py)
that is killed and restarted when a check runs past its timeout, which works from any thread.
"""

from __future__ import annotations

import logging
import json
import os
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 60.0
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} that closes, braces balanced; None if none closes.

    Linear time: a box still open when the next box starts encloses that box, and since the later
    box never closes, neither does the outer one; so each box is scanned only up to the next."""
    marks = list(_BOX.finditer(text))
    for k in range(len(marks) - 1, -1, -1):
        start = marks[k].end()
        limit = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        depth, i = 1, start
        while i < limit:
            c = text[i]
            if c == "\\" and i + 1 < len(text):  # skip escaped characters such as \{ and \}
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    return None


def extract_answer(text: str) -> str | None:
    """The final answer a response commits to, or None."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        return _clean_tail(hashes[-1])
    said = _ANSWER_IS.findall(text)
    if said:
        return _clean_tail(said[-1])
    return None


def _clean_tail(s: str) -> str | None:
    """The answer after "####" or "the answer is", without math delimiters; None when what follows is a
    box that never closes (a response cut off mid-answer commits to nothing)."""
    s = s.strip().rstrip(".").strip()
    if _BOX.search(s):
        return None
    s = re.sub(r"^(?:\$+|\\\(|\\\[)|(?:\$+|\\\)|\\\])$", "", s).strip().rstrip(".").strip()
    return s or None


def normalize(answer: str) -> str:
    """Light normalization for string matching: spaces, $, \\text{}, \\left/\\right, trailing period, units of dollars."""
    s = answer.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right|!|,|;|:)", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("dfrac", "frac").replace("tfrac", "frac")
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def as_number(answer: str) -> Fraction | None:
    """A plain decimal number (commas as thousands separators allowed), else None."""
    s = normalize(answer).replace("^\\circ", "").replace("\\%", "").replace("%", "")
    if not s or not _NUMBER.match(s) or s in {"+", "-", "."}:
        return None
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


@dataclass
class Check:
    equal: bool
    flag: str | None = None  # "timeout" | "parse_error" when the symbolic check could not decide


def equivalent(reference: str, candidate: str, mode: str = "symbolic", timeout_s: float = DEFAULT_TIMEOUT_S) -> Check:
    """Is `candidate` the same final answer as `reference`? (reference is the gold side)."""
    if mode not in {"symbolic", "string"}:
        raise ValueError(f"mode must be 'symbolic' or 'string', got {mode!r}")
    if mode == "string":
        return Check(normalize(reference) == normalize(candidate))
    if normalize(reference) == normalize(candidate):
        return Check(True)
    a, b = as_number(reference), as_number(candidate)
    if a is not None and b is not None:
        return Check(a == b)
    return _worker().check(reference, candidate, timeout_s)


def is_right(gold: str | float | None, answer: str | None, mode: str = "symbolic") -> bool:
    """An answer graded against gold, for scoring only (gold first: math-verify's order); no answer, or no gold, is wrong."""
    return gold is not None and answer is not None and equivalent(str(gold), answer, mode=mode).equal


# -- the symbolic worker -------------------------------------------------------------------------
def symbolic_check(reference: str, candidate: str) -> bool:
    """math-verify with `reference` as gold; runs inside the worker process only."""
    from math_verify import parse, verify

    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{candidate}}}", parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


class _Worker:
    """One `python -m catrl.verify_worker` child; killed and replaced when a check times out."""

    def __init__(self, fn: str = "catrl.verify:symbolic_check") -> None:
        self._fn = fn  # "module:function", imported by the child
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "catrl.verify_worker", self._fn],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        # warm up: importing sympy takes seconds and must not count against a check
        if self._ask("1", "1", STARTUP_TIMEOUT_S) is None:
            self._kill()
            raise RuntimeError(f"the math-verify worker did not start within {STARTUP_TIMEOUT_S}s")

    def _ask(self, reference: str, candidate: str, timeout_s: float) -> list | None:
        """The child's reply, or None if it did not answer within the timeout or died."""
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write((json.dumps([reference, candidate]) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        try:
            return json.loads(line) if line else None
        except ValueError:
            return None

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def check(self, reference: str, candidate: str, timeout_s: float) -> Check:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            reply = self._ask(reference, candidate, timeout_s)
            if reply is None:
                dead = self._proc is not None and self._proc.poll() is not None
                self._kill()
                if dead:
                    return Check(False, "parse_error")
                log.warning("symbolic check timed out after %.1fs: %r vs %r", timeout_s, reference[:80], candidate[:80])
                return Check(False, "timeout")
            status, value = reply
            if status != "ok":
                return Check(False, "parse_error")
            return Check(bool(value))

    def close(self) -> None:
        with self._lock:
            self._kill()


_WORKER: _Worker | None = None
_WORKER_LOCK = threading.Lock()


def _worker() -> _Worker:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = _Worker()
        return _WORKER
