"""The call cache and the cached engine wrapper (orchestration; a fake engine counts calls)."""

import json

from catrl.cache import CallCache, call_key
from catrl.engines.base import CachedEngine
from catrl.types import ChatRequest, Completion, Sampling, ScoredContinuation, TokenLogprob


class CountingEngine:
    identity = "fake:1"
    supports_logprobs = True
    supports_scoring = True

    def __init__(self):
        self.seen: list[str] = []

    def generate(self, requests, sampling, n=1, on_result=None):
        out = []
        for i, r in enumerate(requests):
            self.seen.append(r.messages[-1]["content"])
            comps = [Completion(f"{r.messages[-1]['content']}#{sampling.seed}#{j}", "stop", 3, 2) for j in range(n)]
            if on_result:
                on_result(i, comps)
            out.append(comps)
        return out

    def score(self, requests, continuations):
        self.seen.extend(continuations)
        return [ScoredContinuation([TokenLogprob("x", -1.0)]) for _ in continuations]

    def close(self):
        pass


def test_cached_engine_makes_each_call_once(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    reqs = [ChatRequest.user("a"), ChatRequest.user("b")]
    first = eng.generate(reqs, Sampling(seed=1), n=2)
    again = eng.generate(reqs + [ChatRequest.user("c")], Sampling(seed=1), n=2)
    assert inner.seen == ["a", "b", "c"]
    assert [c.text for c in again[0]] == [c.text for c in first[0]]
    assert all(c.cached for c in again[0]) and not again[2][0].cached
    assert eng.calls_made == 3


def test_cache_survives_reopen(tmp_path):
    inner = CountingEngine()
    CachedEngine(inner, CallCache(tmp_path / "c.sqlite")).generate([ChatRequest.user("a")], Sampling(), n=1)
    eng2 = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    eng2.generate([ChatRequest.user("a")], Sampling(), n=1)
    assert inner.seen == ["a"] and eng2.calls_made == 0


def test_key_depends_on_engine_messages_sampling_seed_and_n():
    req = {"messages": [{"role": "user", "content": "q"}], "sampling": Sampling().to_dict(), "n": 2}
    base = call_key("e1", "generate", req)
    assert base == call_key("e1", "generate", dict(req))
    assert base != call_key("e2", "generate", req)
    assert base != call_key("e1", "generate", {**req, "n": 3})
    assert base != call_key("e1", "generate", {**req, "sampling": Sampling(seed=1).to_dict()})
    assert base != call_key("e1", "generate", {**req, "sampling": Sampling(temperature=1.0).to_dict()})
    assert base != call_key("e1", "generate", {**req, "messages": [{"role": "user", "content": "q2"}]})


def test_request_id_is_not_part_of_the_key(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    eng.generate([ChatRequest.user("a", id="row-1")], Sampling(), n=1)
    eng.generate([ChatRequest.user("a", id="row-2")], Sampling(), n=1)
    assert inner.seen == ["a"]


def test_scores_are_cached(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    r = [ChatRequest.user("a")]
    assert eng.score(r, ["cont"])[0].mean_nll == 1.0
    eng.score(r, ["cont"])
    assert inner.seen == ["cont"]


def test_export_then_import_replays_every_call_on_another_machine(tmp_path):
    from catrl.cache import call_key, export_calls, import_calls

    here = CachedEngine(CountingEngine(), CallCache(tmp_path / "here.sqlite"))
    first = here.generate([ChatRequest.user("a"), ChatRequest.user("b")], Sampling(seed=3), n=2)
    here.score([ChatRequest.user("q")], ["cont"])
    assert export_calls(here.cache, tmp_path / "calls.jsonl.gz") == 3
    assert export_calls(here.cache, tmp_path / "gen.jsonl", kind="generate") == 2
    keys = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    first_key = call_key(keys[0]["engine"], keys[0]["kind"], keys[0]["request"])
    assert export_calls(here.cache, tmp_path / "rest.jsonl", kind="generate", exclude={first_key}) == 1  # another export carries it

    inner = CountingEngine()
    there = CachedEngine(inner, CallCache(tmp_path / "there.sqlite"))
    assert import_calls(there.cache, tmp_path / "calls.jsonl.gz") == (3, 0)
    assert import_calls(there.cache, tmp_path / "calls.jsonl.gz") == (0, 3)  # idempotent
    again = there.generate([ChatRequest.user("a"), ChatRequest.user("b")], Sampling(seed=3), n=2)
    there.score([ChatRequest.user("q")], ["cont"])
    assert inner.seen == [] and there.calls_made == 0
    assert [[c.text for c in g] for g in again] == [[c.text for c in g] for g in first]
    assert there.cache.summary() == [("fake:1", "generate", 2), ("fake:1", "score", 1)]


def test_a_run_exports_only_the_calls_it_used_when_the_cache_holds_other_runs(tmp_path):
    from catrl.cache import export_calls

    cache = CallCache(tmp_path / "shared.sqlite")
    CachedEngine(CountingEngine(), cache).generate([ChatRequest.user("another run"), ChatRequest.user("theirs")], Sampling(seed=0))
    run = CachedEngine(CountingEngine(), cache, track_keys=True)
    run.generate([ChatRequest.user("another run"), ChatRequest.user("mine")], Sampling(seed=0))  # one cached, one new
    run.score([ChatRequest.user("q")], ["Yes"])
    assert len(run.keys_used) == 3 and CachedEngine(CountingEngine(), cache).keys_used is None  # tracking is opt-in
    assert export_calls(cache, tmp_path / "mine.jsonl", only=run.keys_used) == 3
    assert export_calls(cache, tmp_path / "new.jsonl", only=run.keys_used, kind="generate") == 2
    assert export_calls(cache, tmp_path / "all.jsonl") == 4  # "theirs" stays out of the run's own export


def test_import_keeps_local_results_and_recomputes_keys(tmp_path):
    """A line whose request was edited can only answer the edited request, never the original one."""
    import json

    from catrl.cache import export_calls, import_calls

    src = CachedEngine(CountingEngine(), CallCache(tmp_path / "src.sqlite"))
    src.generate([ChatRequest.user("a")], Sampling(seed=1), n=1)
    export_calls(src.cache, tmp_path / "calls.jsonl")
    row = json.loads((tmp_path / "calls.jsonl").read_text())
    row["result"][0]["text"] = "forged"
    row["request"]["messages"][0]["content"] = "other"
    (tmp_path / "forged.jsonl").write_text(json.dumps(row) + "\n")

    inner = CountingEngine()
    dst = CachedEngine(inner, CallCache(tmp_path / "dst.sqlite"))
    assert import_calls(dst.cache, tmp_path / "forged.jsonl") == (1, 0)
    assert dst.generate([ChatRequest.user("a")], Sampling(seed=1), n=1)[0][0].text == "a#1#0"  # computed, not forged
    assert inner.seen == ["a"]


def test_import_names_file_line_and_field_of_bad_input(tmp_path):
    import pytest

    from catrl.cache import import_calls
    from catrl.errors import InputError

    cache = CallCache(tmp_path / "c.sqlite")
    good = '{"engine": "e", "kind": "generate", "request": {}, "result": []}'
    cases = {
        "notjson.jsonl": (good + "\n{oops\n", r"notjson.jsonl:2: not valid JSON"),
        "array.jsonl": ("[1]\n", r"array.jsonl:1: expected a JSON object"),
        "noengine.jsonl": ('{"kind": "generate", "request": {}, "result": []}\n', r"noengine.jsonl:1: field 'engine' is missing"),
        "badkind.jsonl": ('{"engine": "e", "kind": 3, "request": {}, "result": []}\n', r"badkind.jsonl:1: field 'kind' must be a str, not int"),
        "noresult.jsonl": ('{"engine": "e", "kind": "generate", "request": {}}\n', r"noresult.jsonl:1: field 'result' is missing"),
        "badtime.jsonl": ('{"engine": "e", "kind": "k", "request": {}, "result": 1, "created": "x"}\n', r"badtime.jsonl:1: field 'created'"),
        "notgzip.jsonl.gz": ("plain text\n", r"notgzip.jsonl.gz: not a readable call export"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            import_calls(cache, tmp_path / name)
    with pytest.raises(InputError, match="no such call export"):
        import_calls(cache, tmp_path / "missing.jsonl")


def test_export_rounds_logprobs_of_completions_and_scorings_only_when_asked(tmp_path):
    from catrl.cache import export_calls, import_calls

    class LogprobEngine(CountingEngine):
        def generate(self, requests, sampling, n=1, on_result=None):
            return [[Completion("t", "stop", 3, 2, [TokenLogprob("a", -0.123456789), TokenLogprob("b", -2.0)])] for _ in requests]

        def score(self, requests, continuations):
            return [ScoredContinuation([TokenLogprob("x", -1.987654321)]) for _ in continuations]

    here = CachedEngine(LogprobEngine(), CallCache(tmp_path / "here.sqlite"))
    here.generate([ChatRequest.user("a")], Sampling(logprobs=True), n=1)
    here.score([ChatRequest.user("q")], ["cont"])
    assert export_calls(here.cache, tmp_path / "exact.jsonl") == 2
    assert export_calls(here.cache, tmp_path / "small.jsonl.gz", logprob_digits=4) == 2
    assert "-0.123456789" in (tmp_path / "exact.jsonl").read_text()

    inner = CountingEngine()
    there = CachedEngine(inner, CallCache(tmp_path / "there.sqlite"))
    assert import_calls(there.cache, tmp_path / "small.jsonl.gz") == (2, 0)
    comp = there.generate([ChatRequest.user("a")], Sampling(logprobs=True), n=1)[0][0]
    scored = there.score([ChatRequest.user("q")], ["cont"])[0]
    assert inner.seen == []
    assert [(t.token, t.logprob) for t in comp.logprobs] == [("a", -0.1235), ("b", -2.0)] and comp.text == "t"
    assert [(t.token, t.logprob) for t in scored.tokens] == [("x", -1.9877)]


def test_cache_commands_info_export_import(tmp_path):
    from typer.testing import CliRunner

    from catrl.cli import app

    src = CachedEngine(CountingEngine(), CallCache(tmp_path / "src.sqlite"))
    src.generate([ChatRequest.user("a")], Sampling(seed=1), n=1)
    run = CliRunner().invoke
    r = run(app, ["cache", "export", str(tmp_path / "x.jsonl.gz"), "--engine", "fake", "--logprob-digits", "4", "--cache", str(tmp_path / "src.sqlite")])
    assert r.exit_code == 0 and "exported 1 calls" in r.output
    r = run(app, ["cache", "import", str(tmp_path / "x.jsonl.gz"), "--cache", str(tmp_path / "dst.sqlite")])
    assert r.exit_code == 0 and "imported 1 calls" in r.output
    r = run(app, ["cache", "info", "--cache", str(tmp_path / "dst.sqlite")], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "fake:1" in r.output and "generate" in r.output
    (tmp_path / "bad.jsonl").write_text("{}\n")
    r = run(app, ["cache", "import", str(tmp_path / "bad.jsonl"), "--cache", str(tmp_path / "dst.sqlite")], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "bad.jsonl:1: field 'engine' is missing" in r.output
