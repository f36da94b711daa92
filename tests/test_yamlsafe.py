"""The safe YAML loader: line numbers, and every limit it enforces (SPEC section 3, rule 1)."""

from __future__ import annotations

import pytest

from reconciler.core import yamlsafe
from reconciler.core.yamlsafe import YamlProblem, load


def refused(text: str | bytes) -> YamlProblem:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    with pytest.raises(YamlProblem) as info:
        load(raw)
    return info.value


def test_lines_of_keys_and_values() -> None:
    doc = load(b"# comment\nname: app\nblocks:\n  - definition: d\n    users:\n      - u1\n      - u2\n")
    assert doc.data == {"name": "app", "blocks": [{"definition": "d", "users": ["u1", "u2"]}]}
    assert doc.key_lines[("name",)] == 2
    assert doc.value_lines[("name",)] == 2
    assert doc.key_lines[("blocks",)] == 3
    assert doc.value_lines[("blocks", 0)] == 4
    assert doc.value_lines[("blocks", 0, "users", 1)] == 7
    assert doc.line_of(("blocks", 0, "users"), key=True) == 5


def test_line_of_a_missing_node_is_its_nearest_ancestor() -> None:
    doc = load(b"a: 1\nb:\n  c: 2\n")
    assert doc.line_of(("b", "missing", 3)) == 3  # the mapping `b` starts on line 3
    assert doc.line_of(("nothing",)) == 1


def test_value_on_its_own_line_after_the_key() -> None:
    doc = load(b"description:\n  folded text\n")
    assert doc.key_lines[("description",)] == 1
    assert doc.value_lines[("description",)] == 2


def test_plain_data_types_and_strings_kept_as_written() -> None:
    doc = load(b"a: 1\nb: 1.5\nc: true\nd: null\ne: '1'\nf: 2026-11-21T12:00:00Z\n1001: x\nyes: y\n")
    assert doc.data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "1", "f": "2026-11-21T12:00:00Z",
                        "1001": "x", "yes": "y"}


def test_empty_document_is_none() -> None:
    assert load(b"").data is None
    assert load(b"# only a comment\n").data is None


def test_utf8_bom_is_accepted() -> None:
    assert load("\ufeffa: b\n".encode()).data == {"a": "b"}


def test_duplicate_key_names_both_lines() -> None:
    problem = refused("a: 1\nb: 2\na: 3\n")
    assert problem.code == "YAML_DUPLICATE_KEY"
    assert problem.line == 3
    assert "'a'" in problem.message and "first at line 1" in problem.message


def test_duplicate_key_in_nested_mapping() -> None:
    problem = refused("top:\n  x: 1\n  y: 2\n  x: 3\n")
    assert (problem.code, problem.line) == ("YAML_DUPLICATE_KEY", 4)


def test_same_key_in_different_mappings_is_fine() -> None:
    assert load(b"a: {x: 1}\nb: {x: 2}\n").data == {"a": {"x": 1}, "b": {"x": 2}}


def test_alias_expansion_beyond_budget_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    problem = refused("\n".join(lines) + "\n")
    assert problem.code == "YAML_ALIAS_BUDGET"
    assert str(yamlsafe.NODE_BUDGET) in problem.message
    assert problem.line is not None and 2 <= problem.line <= 8


def test_small_aliases_are_allowed() -> None:
    doc = load(b"base: &b {x: 1}\ncopy: *b\n")
    assert doc.data == {"base": {"x": 1}, "copy": {"x": 1}}
    assert doc.value_lines[("copy",)] == 2


def test_alias_before_anchor_is_a_parse_problem() -> None:
    problem = refused("a: *nope\n")
    assert problem.code == "YAML_PARSE"
    assert problem.line == 1


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    depth = yamlsafe.MAX_DEPTH + 5
    problem = refused("[" * depth + "]" * depth + "\n")
    assert problem.code == "YAML_DEPTH"


@pytest.mark.parametrize("text, line", [
    ("a: 1\nb: " + "[" * 10_000 + "]" * 10_000 + "\n", 2),  # libyaml scans a whole flow line ahead
    ("a: 1\nb:\n" + (" " + "[" * 30 + "\n") * 50 + " " + "]" * 1_500 + "\n", 5),  # the 65th level is on line 5
    ("a:\n" + "- " * 1_100 + "x\n", 2),
    ("".join(" " * i + "a:\n" for i in range(1_100)) + " " * 1_100 + "x\n", 2 + yamlsafe.MAX_DEPTH),
])
def test_very_deep_nesting_is_refused_at_the_line_it_passes_the_limit(text: str, line: int) -> None:
    """Whatever the parser's own nesting limit (PyYAML 6.0.4's libyaml reports "exceeded maximum nesting depth"
    as a scanner error, 6.0.3's has none), ours decides: YAML_DEPTH, at the line where it is passed."""
    problem = refused(text)
    assert (problem.code, problem.line) == ("YAML_DEPTH", line), problem.message


def test_aliases_cannot_nest_past_the_limit() -> None:
    """Each anchor nests the one before 60 levels deeper: the data nests 2,400 levels (it used to overflow the
    stack of whatever walked it), though no single node is written deeper than 61."""
    lines = ["a0: &a0 " + "[" * 60 + "x" + "]" * 60]
    lines += [f"a{k}: &a{k} " + "[" * 60 + f"*a{k - 1}" + "]" * 60 for k in range(1, 40)]
    problem = refused("\n".join(lines) + "\n")
    assert (problem.code, problem.line) == ("YAML_DEPTH", 2), problem.message
    assert "*a0" in problem.message


def test_an_alias_may_nest_its_anchor_up_to_the_limit() -> None:
    half = yamlsafe.MAX_DEPTH // 2

    def text(levels: int) -> str:  # `b` is at depth 1, its alias at 1 + levels, the anchor's node `half` deep
        return "a: &a " + "[" * half + "x" + "]" * half + "\nb: " + "[" * levels + "*a" + "]" * levels + "\n"

    assert load(text(half - 1).encode()).data["b"] is not None  # the deepest node at exactly MAX_DEPTH
    assert refused(text(half)).code == "YAML_DEPTH"


@pytest.mark.parametrize("digits", ["0x" + "f" * 3_600, "0" + "7" * 4_800, "0b" + "1" * 14_000])
def test_integers_too_large_to_print_are_refused(digits: str) -> None:
    """Hex, octal and binary have no digit limit to parse, but Python refuses to print an int of more than 4,300
    decimal digits (which every later step does): refused at its line, not a crash in a later step."""
    problem = refused(f"a: 1\nb: {digits}\n")
    assert (problem.code, problem.line) == ("YAML_PARSE", 2), problem.message
    assert "too large" in problem.message
    assert load(b"b: 0xffffffffffffffffffffffff\n").data == {"b": 0xFFFFFFFFFFFFFFFFFFFFFFFF}


def test_nesting_at_the_limit_is_fine() -> None:
    depth = yamlsafe.MAX_DEPTH - 1
    assert load(("[" * depth + "]" * depth + "\n").encode()).data is not None


@pytest.mark.parametrize("text, line", [
    ("a: !!python/object:os.system ls\n", 1),
    ("a: 1\nb: !custom {x: 1}\n", 2),
    ("a: !!binary aGVsbG8=\n", 1),
    ("a: !!set {x}\n", 1),
    ("!!python/name:os.system : 1\n", 1),
])
def test_custom_tags_are_refused(text: str, line: int) -> None:
    problem = refused(text)
    assert problem.code == "YAML_TAG"
    assert problem.line == line


def test_standard_tags_are_allowed() -> None:
    assert load(b"a: !!str 12\nb: !!int '7'\n").data == {"a": "12", "b": 7}


def test_file_over_one_mib_is_refused_at_line_one() -> None:
    raw = b"a: " + b"x" * (yamlsafe.MAX_BYTES) + b"\n"
    problem = refused(raw)
    assert (problem.code, problem.line) == ("YAML_TOO_LARGE", 1)
    assert "1 MiB" in problem.message


def test_file_of_exactly_one_mib_is_accepted() -> None:
    raw = b"a: " + b"x" * (yamlsafe.MAX_BYTES - 4) + b"\n"
    assert len(raw) == yamlsafe.MAX_BYTES
    assert len(load(raw).data["a"]) == yamlsafe.MAX_BYTES - 4


def test_non_utf8_is_refused_with_its_line() -> None:
    problem = refused(b"a: 1\nb: caf\xe9\n")
    assert problem.code == "YAML_ENCODING"
    assert problem.line == 2


def test_utf16_is_refused() -> None:
    problem = refused("a: 1\n".encode("utf-16"))
    assert problem.code == "YAML_ENCODING"


def test_merge_key_is_refused() -> None:
    problem = refused("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert (problem.code, problem.line) == ("YAML_MERGE", 3)


def test_quoted_merge_key_is_a_plain_key() -> None:
    assert load(b"'<<': 1\n").data == {"<<": 1}


def test_multiple_documents_are_refused() -> None:
    problem = refused("a: 1\n---\nb: 2\n")
    assert problem.code == "YAML_PARSE"
    assert problem.line == 2
    assert "more than one" in problem.message


def test_explicit_single_document_is_fine() -> None:
    assert load(b"---\na: 1\n...\n").data == {"a": 1}


def test_tab_indentation_is_explained() -> None:
    problem = refused("a:\n\tb: 1\n")
    assert problem.code == "YAML_PARSE"
    assert problem.line == 2
    assert "tab" in problem.message


def test_parse_error_points_at_the_parser_line() -> None:
    problem = refused("a: 1\nb: [1, 2\nc: 3\n")
    assert problem.code == "YAML_PARSE"
    assert problem.line is not None and problem.line >= 2


def test_complex_keys_are_refused() -> None:
    problem = refused("? [a, b]\n: 1\n")
    assert problem.code == "YAML_PARSE"
    assert "keys" in problem.message


def test_bad_scalar_for_its_tag_is_a_parse_problem() -> None:
    problem = refused("a: !!int twelve\n")
    assert (problem.code, problem.line) == ("YAML_PARSE", 1)


def test_loading_keeps_nothing_of_a_document_once_it_is_built() -> None:
    """PyYAML's constructor remembers every node it built; a long-running process (`watch`, `serve`) must not
    keep one entry per scalar it ever read (found by an attack: 2,000 entries, 700 KB, per file)."""
    yamlsafe._plain.clear()
    load("\n".join(f"k{i}: {i}" for i in range(2_000)).encode())
    assert len(yamlsafe._constructor.constructed_objects) == 0
