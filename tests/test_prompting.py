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
