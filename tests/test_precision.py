"""dtype 'auto': bf16 only where the hardware computes in it (CUDA, AVX512-BF16, AMX), else fp32."""

import pytest

from catrl import precision
from catrl.errors import InputError


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: other\n")
    assert precision.cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_hardware_and_explicit_choices_stand(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert precision.resolve_dtype("auto") == expected
    assert precision.resolve_dtype("bf16") == "bf16" and precision.resolve_dtype("fp32") == "fp32"


def test_unknown_dtype_is_an_input_error():
    with pytest.raises(InputError, match="dtype 'fp16': must be one of auto, bf16, fp32"):
        precision.resolve_dtype("fp16")

