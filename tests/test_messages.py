"""Messages: the public read-only view of the registered templates."""

from __future__ import annotations

import pytest

from src.utils.messages import register, templates


def test_templates_are_a_read_only_snapshot():
    """templates() lists every registered message in every language and cannot change them."""
    register({"test.messages.hello": {"en": "Hello {name}.", "zh": "你好 {name}。"}})
    view = templates()
    assert dict(view["test.messages.hello"]) == {"en": "Hello {name}.", "zh": "你好 {name}。"}
    with pytest.raises(TypeError):
        view["test.messages.hello"] = {"en": "changed"}
    with pytest.raises(TypeError):
        view["test.messages.hello"]["en"] = "changed"
    assert templates()["test.messages.hello"]["en"] == "Hello {name}."


def test_one_template_read_only_or_none():
    """template(key) gives that message's texts (the same as templates()[key]), read-only; None for a key never registered."""
    from src.utils.messages import template

    register({"test.messages.one": {"en": "One {x}.", "zh": "一 {x}。"}})
    texts = template("test.messages.one")
    assert dict(texts) == dict(templates()["test.messages.one"]) == {"en": "One {x}.", "zh": "一 {x}。"}
    with pytest.raises(TypeError):
        texts["en"] = "changed"
    assert template("test.messages.never-registered") is None


def test_option_phrases_of_a_model_with_several_reported_options():
    """Every reported option gets its phrase (a registered translation for one, the option's own template for the other)."""
    from src.models.registry import option_phrases
    from src.utils.options import Option

    register({"option.report.test_first": {"en": "first {value}", "zh": "第一 {value}"}})

    class TwoOptions:
        option_specs = [Option("test_first", str, "x", "a", report="a {}"),
                        Option("test_second", str, "y", "b", report="b {}")]
        options = {"test_second": "z"}

    assert option_phrases(TwoOptions(), "zh") == ["第一 x", "b z"]
    assert option_phrases(TwoOptions(), "en") == ["first x", "b z"]
