"""Final-answer extraction and equivalence for verifiable tasks.

Extraction: the last \\boxed{...} (balanced braces), else GSM8K's "#### X", else "the answer is X".
Equivalence: `mode="symbolic"` (default) asks math-verify with the reference as gold; `mode="string"`
is the paper's plain boxed-string match. Model text is parsed, never evaluated: plain numbers are
compared directly, everything else goes to math-verify (sympy) in a worker process that is killed
and restarted when a check runs past its timeout, which works from any thread.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
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
    """Content of the last \\boxed{...} / \\fbox{...}, braces balanced; None if there is none or it never closes."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
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
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
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


# -- the symbolic worker -------------------------------------------------------------------------
def _symbolic_check(reference: str, candidate: str) -> bool:
    from math_verify import parse, verify

    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{candidate}}}", parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


def _serve(conn, fn) -> None:
    while True:
        try:
            ref, cand = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(ref, cand)))
        except Exception as e:  # noqa: BLE001 - any sympy failure is a defined outcome
            conn.send(("error", repr(e)[:200]))


class _Worker:
    """One child process running math-verify; killed and replaced when a check times out."""

    def __init__(self, fn=_symbolic_check) -> None:
        self._fn = fn  # module-level, so the spawned child can import it
        self._lock = threading.Lock()
        self._proc: mp.process.BaseProcess | None = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._fn), daemon=True, name="catrl-verify")
        self._proc.start()
        child.close()
        self._conn = parent
        parent.send(("1", "1"))  # warm up: importing sympy takes seconds and must not count against a check
        if not parent.poll(STARTUP_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"the math-verify worker did not start within {STARTUP_TIMEOUT_S}s")
        parent.recv()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def check(self, reference: str, candidate: str, timeout_s: float) -> Check:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            try:
                self._conn.send((reference, candidate))
                if not self._conn.poll(timeout_s):
                    log.warning("symbolic check timed out after %.1fs: %r vs %r", timeout_s, reference[:80], candidate[:80])
                    self._kill()
                    return Check(False, "timeout")
                status, value = self._conn.recv()
            except (EOFError, BrokenPipeError, OSError):
                self._kill()
                return Check(False, "parse_error")
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
