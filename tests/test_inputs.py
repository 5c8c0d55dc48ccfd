"""The one bounded YAML reader: anchor bombs are refused by their expanded size (72 aliases
can mean 9**9 nodes), control characters and deep nesting are one ConfigError line."""

from __future__ import annotations

import pytest

from esper_ab.errors import ConfigError
from esper_ab.inputs import MAX_ALIASES, parse_yaml_text, read_yaml_mapping


def _bomb(levels: int) -> str:
    names = "abcdefghijklmnop"[:levels + 1]
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for p, c in zip(names, names[1:], strict=False):
        text += f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
    return text


def test_a_bomb_under_the_alias_limit_is_refused_by_its_expanded_size():
    text = _bomb(8)                                   # 72 aliases, 9**9 leaves expanded
    assert text.count("*") < MAX_ALIASES
    with pytest.raises(ConfigError, match="once its aliases expand"):
        parse_yaml_text(text, what="space", fix="fix it")


def test_ordinary_aliases_still_load():
    assert parse_yaml_text("a: &a [1, 2]\nb: *a\nc: *a\n", what="x", fix="y") == {
        "a": [1, 2], "b": [1, 2], "c": [1, 2]}
    assert parse_yaml_text(_bomb(2), what="x", fix="y")["c"][0][0] == ["x"] * 9


@pytest.mark.parametrize(("text", "match"), [
    ("\x1f", "special characters"),
    ("a: " + "[" * 5000 + "]" * 5000, "nesting deeper"),
    ("a: [1, 2\n", "not valid YAML at line"),
])
def test_bad_text_is_one_line(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_yaml_text(text, what="space", fix="fix it")
    assert "\n" not in str(err.value)


def test_a_huge_file_and_a_folder_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 << 20))
    with pytest.raises(ConfigError, match="over the"):
        read_yaml_mapping(big, "space", "fix it")
    with pytest.raises(ConfigError, match="not a file"):
        read_yaml_mapping(tmp_path, "space", "fix it")
