"""src/utils/argv.py: flag values read before parsing, as argparse reads them (the last one
given wins, both spellings, nothing after ``--``), checked against argparse itself."""

from __future__ import annotations

import argparse

import pytest

from src.utils.argv import flag_values, last_value


def _argparse(argv, flag):
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument(flag)
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--other")
    return getattr(parser.parse_args(argv), flag.lstrip("-").replace("-", "_"))


@pytest.mark.parametrize("argv", [
    [],
    ["--lang", "zh"],
    ["--lang=zh"],
    ["--lang", "zh", "--lang=en"],
    ["--lang=en", "--other", "x", "--lang", "zh"],
    ["--other", "x", "--lang", "en"],
    ["--lang", "zh", "--", "--lang", "en"],
    ["--lang=", "x"],
])
def test_the_value_argparse_takes(argv):
    """last_value gives what argparse parses, for both spellings, repeats and a "--"."""
    assert last_value(argv, "--lang") == _argparse(argv, "--lang")


def test_every_value_and_the_allowed_ones():
    """flag_values lists every value in order; a flag at the end has none; last_value with allowed values skips a wrong later one (the language of a parse error)."""
    argv = ["--lang", "zh", "--lang=xx", "--components", "2", "--lang"]
    assert flag_values(argv, "--lang") == ["zh", "xx"]
    assert flag_values(argv, "--components") == ["2"]
    assert last_value(argv, "--lang") == "xx"
    assert last_value(argv, "--lang", ("en", "zh")) == "zh"
    assert last_value(["--langs", "zh"], "--lang") is None   # another flag's prefix
