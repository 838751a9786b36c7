"""A PEFT LoRA adapter as a llama.cpp LoRA GGUF, so a policy trained in transformers decodes on llama.cpp.

`catrl train` trains a LoRA on the HF directory that hf_policy.py dequantizes from a GGUF, so the
base weights llama.cpp runs are the ones the adapter was trained on; only the adapter needs
converting. This does what llama.cpp's convert_lora_to_gguf.py does for the architectures catrl
ships (llama, qwen2), reading the base GGUF instead of an HF config: same metadata (general.type
"adapter", adapter.type "lora", adapter.lora.alpha), same tensor names (`<gguf name>.lora_a`,
`.lora_b`), f32 data. llama.cpp's HF converter permutes the rows of llama's q and k projections for
its RoPE layout (transformers un-permutes them when it reads the GGUF back), so the rows of those
lora_b matrices get the same permutation; A multiplies the input side and stays as is.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import gguf
import numpy as np

from catrl.errors import InputError

ARCHS = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}
PERMUTES_QK = {"llama"}  # archs whose HF->GGUF conversion permutes q/k rows for RoPE
PREFIX = "base_model.model."


def _field(reader: gguf.GGUFReader, key: str, path: Path):
    f = reader.fields.get(key)
    if f is None:
        raise InputError(f"{path}: the GGUF has no {key}")
    return f.contents()


def _permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """LlamaModel.permute of convert_hf_to_gguf.py on the output rows: per head, interleaved halves."""
    return b.reshape(n_head, 2, b.shape[0] // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _read_config(adapter_dir: Path) -> dict:
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise InputError(f"{cfg_path}: missing; a PEFT LoRA adapter directory has adapter_config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise InputError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: expected a JSON object")

    def refuse(field: str, why: str) -> None:
        raise InputError(f"{cfg_path}: field {field!r} {why}; only plain LoRA converts to a llama.cpp adapter")

    if cfg.get("peft_type") != "LORA":
        refuse("peft_type", f"is {cfg.get('peft_type')!r}, not 'LORA'")
    if cfg.get("use_dora"):
        refuse("use_dora", "is true (DoRA)")
    if cfg.get("bias", "none") != "none":
        refuse("bias", f"is {cfg.get('bias')!r} (trained biases)")
    if cfg.get("modules_to_save"):
        refuse("modules_to_save", "lists fully trained modules")
    if cfg.get("fan_in_fan_out"):
        refuse("fan_in_fan_out", "is true (Conv1D layout)")
    if cfg.get("alpha_pattern"):
        refuse("alpha_pattern", "sets per-module alphas (llama.cpp takes one alpha)")
    if cfg.get("use_rslora") and cfg.get("rank_pattern"):
        refuse("rank_pattern", "sets per-module ranks under use_rslora")
    alpha, r = cfg.get("lora_alpha"), cfg.get("r")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        refuse("lora_alpha", f"is {alpha!r}, not a positive number")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        refuse("r", f"is {r!r}, not a positive integer")
    return cfg


@functools.lru_cache(maxsize=4)
def _base_info(path: str, size: int, mtime_ns: int) -> tuple[str, int, int, int, dict[str, tuple[int, ...]]]:  # noqa: ARG001 - the key
    """What conversion needs of a base GGUF: architecture, block and head counts, tensor shapes (ggml
    order: in, out). Memoized per file version: GGUFReader parses the whole vocabulary (~15 s for
    Qwen2.5's 151k tokens), and a trainer converts its adapter after every step."""
    base_gguf = Path(path)
    reader = gguf.GGUFReader(base_gguf)
    arch = _field(reader, "general.architecture", base_gguf)
    if arch not in ARCHS:
        raise InputError(f"{base_gguf}: general.architecture is {arch!r}; LoRA conversion supports {sorted(ARCHS)}")
    n_blocks = int(_field(reader, f"{arch}.block_count", base_gguf))
    n_head = int(_field(reader, f"{arch}.attention.head_count", base_gguf))
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv", base_gguf))
    return arch, n_blocks, n_head, n_head_kv, {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}


def adapter_to_gguf(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """Convert `adapter_dir` (adapter_config.json + adapter_model.safetensors), trained on the HF form
    of `base_gguf`, into a llama.cpp LoRA GGUF at `out` (written to a temporary file, then renamed)."""
    from safetensors.torch import load_file

    adapter_dir, base_gguf, out = Path(adapter_dir), Path(base_gguf), Path(out)
    cfg = _read_config(adapter_dir)
    st_path = adapter_dir / "adapter_model.safetensors"
    if not st_path.is_file():
        raise InputError(f"{st_path}: missing; save the adapter with safe_serialization (the default)")
    if not base_gguf.is_file():
        raise InputError(f"{base_gguf}: base GGUF not found")

    st = base_gguf.stat()
    arch, n_blocks, n_head, n_head_kv, base_shapes = _base_info(str(base_gguf.resolve()), st.st_size, st.st_mtime_ns)
    tmap = gguf.get_tensor_name_map(ARCHS[arch], n_blocks)

    # alpha/r is PEFT's scale and llama.cpp's (it divides by each lora_b's rank); rsLoRA's alpha/sqrt(r) folds in
    alpha = float(cfg["lora_alpha"]) * (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else 1.0)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, t in load_file(str(st_path), device="cpu").items():
        name = key.removeprefix(PREFIX)
        for suffix, part in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
            if name.endswith(suffix):
                break
        else:
            raise InputError(f"{st_path}: tensor {key!r} is neither a lora_A nor a lora_B weight")
        module = name.removesuffix(suffix)
        pairs.setdefault(module, {})[part] = t.float().numpy()
    if not pairs:
        raise InputError(f"{st_path}: no LoRA tensors")

    tensors: list[tuple[str, np.ndarray]] = []
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"a", "b"}:
            raise InputError(f"{st_path}: module {module!r} has lora_{'A' if 'a' in ab else 'B'} but not its partner")
        target = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None or target not in base_shapes:
            raise InputError(f"{st_path}: module {module!r} has no tensor in {base_gguf.name} ({arch}); target_modules must be linear layers")
        a, b = ab["a"], ab["b"]
        n_in, n_out = base_shapes[target]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[1] != n_in or b.shape[0] != n_out:
            raise InputError(
                f"{st_path}: module {module!r}: lora_A {a.shape} and lora_B {b.shape} do not fit {target} "
                f"({n_out}x{n_in}); was the adapter trained on another base model?"
            )
        if arch in PERMUTES_QK and ".attn_q." in target:
            b = _permute_rows(b, n_head)
        elif arch in PERMUTES_QK and ".attn_k." in target:
            b = _permute_rows(b, n_head_kv)
        tensors += [(target + ".lora_a", a), (target + ".lora_b", b)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, data in tensors:
            w.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def adapter_gguf_for(adapter: Path, base_gguf: Path) -> Path:
    """A LoRA GGUF for `adapter`: a .gguf as given, or a PEFT directory converted once into the user
    cache (keyed by the adapter's and the base model's bytes, so a retrained adapter converts again)."""
    import hashlib

    from catrl.paths import cache_dir

    adapter = Path(adapter).expanduser()
    if adapter.suffix == ".gguf":
        if not adapter.is_file():
            raise InputError(f"{adapter}: LoRA GGUF not found")
        return adapter
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError(f"{adapter}: not a PEFT LoRA directory (no adapter_model.safetensors) nor a .gguf")
    h = hashlib.sha256(weights.read_bytes())
    h.update((adapter / "adapter_config.json").read_bytes() if (adapter / "adapter_config.json").is_file() else b"")
    h.update(f"{base_gguf.resolve()}:{base_gguf.stat().st_size}".encode())
    out = cache_dir() / "adapters" / f"{h.hexdigest()[:16]}.gguf"
    return out if out.is_file() else adapter_to_gguf(adapter, base_gguf, out)
