import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catrl.datasets import load_examples, parse_field_map
from catrl.errors import InputError


def test_packaged_gsm8k_has_all_test_questions():
    exs = load_examples("gsm8k")
    assert len(exs) == 1319
    assert exs[0].question.startswith("Janet")
    assert exs[0].gold.endswith("#### 18")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"question": "a"}\n{"question": "b"\n')
    with pytest.raises(InputError, match=r"d\.jsonl:2: not valid JSON"):
        load_examples(str(p))


def test_missing_field_names_field_and_option(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(InputError) as e:
        load_examples(str(p))
    msg = str(e.value)
    assert "d.jsonl:1" in msg and "'question'" in msg and "--field question=" in msg and "problem" in msg
    assert load_examples(str(p), parse_field_map(["question=problem"]))[0].question == "x"


def test_parquet_with_field_map(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "uid": ["a", "b"]}), p)
    exs = load_examples(str(p), {"question": "problem", "id": "uid"})
    assert [(e.id, e.question) for e in exs] == [("a", "1+1?"), ("b", "2+2?")]


def test_bad_field_map_and_duplicate_ids(tmp_path):
    with pytest.raises(InputError, match="FIELD=COLUMN"):
        parse_field_map(["question"])
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n')
    with pytest.raises(InputError, match="duplicate"):
        load_examples(str(p))
