import pytest

from catrl import prompting
from catrl.errors import InputError


def test_every_prompt_renders():
    for name in prompting.available():
        values = {f: f"<{f}>" for f in prompting.fields(name)}
        text = prompting.render(name, **values)
        assert "{{" not in text
        for v in values.values():
            assert v in text


def test_missing_or_unknown_fields_fail():
    with pytest.raises(InputError, match="missing"):
        prompting.render("solve")
    with pytest.raises(InputError, match="unexpected"):
        prompting.render("solve", question="q", extra="x")


def test_inserted_text_is_not_rescanned():
    text = prompting.render("solve", question="{{question}} \\boxed{1}")
    assert text.count("{{question}}") == 1


def test_a_prompts_directory_replaces_only_the_prompts_it_holds(tmp_path, monkeypatch):
    (tmp_path / "solve.txt").write_text("Mine: {{question}}", encoding="utf-8")
    monkeypatch.setenv(prompting.ENV, str(tmp_path))
    assert prompting.render("solve", question="2+2?") == "Mine: 2+2?"
    assert prompting.overridden() == ["solve"]
    assert "{{candidates}}" in prompting.load("synthesis_reasoning")  # not in the directory: the packaged text
    monkeypatch.delenv(prompting.ENV)
    assert prompting.render("solve", question="2+2?") != "Mine: 2+2?"


def test_a_replacement_prompt_with_other_placeholders_or_an_unknown_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(prompting.ENV, str(tmp_path))
    (tmp_path / "solve.txt").write_text("Mine: {{problem}}", encoding="utf-8")
    with pytest.raises(InputError, match=r"solve\.txt.*missing \['question'\].*unknown \['problem'\]"):
        prompting.load("solve")
    d2 = tmp_path / "again"  # a fresh directory: the name check is cached per directory
    d2.mkdir()
    (d2 / "synthesis_reasonig.txt").write_text("{{count}} {{candidates}}", encoding="utf-8")
    monkeypatch.setenv(prompting.ENV, str(d2))
    with pytest.raises(InputError, match="synthesis_reasonig.txt: no packaged prompt named"):
        prompting.load("synthesis_reasoning")
    monkeypatch.setenv(prompting.ENV, str(tmp_path / "absent"))
    with pytest.raises(InputError, match="not a directory"):
        prompting.load("solve")
