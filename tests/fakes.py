"""A scripted engine for orchestration tests: records every request, answers from a function."""

from catrl.types import Completion, ScoredContinuation, TokenLogprob


class ScriptedEngine:
    identity = "scripted:1"
    supports_logprobs = True
    supports_scoring = True

    def __init__(self, reply=lambda text: "\\boxed{42}", nll=lambda prompt, cont: 1.0):
        self.reply, self.nll = reply, nll
        self.requests = []
        self.scored = []

    def generate(self, requests, sampling, n=1, on_result=None):
        out = []
        for i, r in enumerate(requests):
            self.requests.append(r)
            comps = [Completion(self.reply(r.messages[-1]["content"]), "stop", 10, 5) for _ in range(n)]
            if on_result:
                on_result(i, comps)
            out.append(comps)
        return out

    def score(self, requests, continuations):
        res = []
        for r, c in zip(requests, continuations):
            self.scored.append((r, c))
            res.append(ScoredContinuation([TokenLogprob("t", -self.nll(r.messages[-1]["content"], c))]))
        return res

    def close(self):
        pass
