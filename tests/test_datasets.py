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


def test_packaged_full_math_test_set():
    exs = load_examples("math")
    assert len(exs) == 5000 and len({e.id for e in exs}) == 5000
    assert all(e.gold for e in exs)
    by_problem = {e.question: e.gold for e in exs}
    math500 = load_examples("math500")
    # MATH-500 is a subset of the MATH test set, with the same gold answers
    assert all(m.question in by_problem for m in math500)
    assert all(by_problem[m.question] == m.gold for m in math500)


def test_gzipped_jsonl(tmp_path):
    import gzip

    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"question": "q1", "answer": "1"}\n{"question": "q2", "answer": "2"}\n')
    assert [e.question for e in load_examples(str(p))] == ["q1", "q2"]
