"""The trainable policy: an HF model directory for transformers, made once from an embedded GGUF.

CaT-RL trains the policy in transformers while the anchor (the same initial weights) runs on
llama.cpp. transformers can read a GGUF and dequantize it, but a GGUF-loaded model carries a
quantizer that refuses training and saving, and TRL reloads models by directory name (its
processor and reference model), so the GGUF is converted once into a plain safetensors directory
under the cache (`<cache>/hf/<name>`), written to a temporary directory and renamed into place.
The dequantized weights are the weights llama.cpp runs (rounded to bf16), so policy and anchor
start from the same model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from catrl import models
from catrl.errors import InputError
from catrl.paths import cache_dir

log = logging.getLogger(__name__)


def hf_dir(name: str) -> Path:
    return cache_dir() / "hf" / name


def _is_hf_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file()


def policy_gguf(spec: str) -> Path | None:
    """The GGUF a policy is dequantized from (an embedded name or a .gguf file); None for anything else
    (an HF directory)."""
    p = Path(spec).expanduser()
    if spec in models.REGISTRY or (p.suffix == ".gguf" and p.is_file()):
        return models.resolve(spec)
    return None


def resolve_policy(spec: str) -> Path:
    """An embedded model name, a .gguf file or an HF model directory -> an HF model directory."""
    p = Path(spec).expanduser()
    if _is_hf_dir(p):
        return p
    if spec in models.REGISTRY:
        out, gguf = hf_dir(spec), models.resolve(spec)
    elif p.is_file() and p.suffix == ".gguf":
        out, gguf = cache_dir() / "hf" / f"{p.stem}-{p.stat().st_size}", p
    else:
        raise InputError(
            f"policy {spec!r} is neither an embedded model ({', '.join(models.REGISTRY)}), a .gguf file, "
            "nor an HF model directory (a folder with config.json)"
        )
    if not _is_hf_dir(out):
        convert_gguf(gguf, out)
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF into an HF safetensors directory (bf16 weights, tokenizer with chat template)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to an HF directory at %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=str(gguf))
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=str(gguf), dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
