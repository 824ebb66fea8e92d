from __future__ import annotations

from pathlib import Path

import pytest

from mysimbdp.domain.profile import DEFAULT_PROFILE, dump_profile, load_profile, parse_profile
from mysimbdp.errors import ProfileError


def test_default_profile_round_trips_through_yaml() -> None:
    """The default profile dumps to YAML that parses back to the same profile."""
    assert parse_profile(dump_profile(DEFAULT_PROFILE), "default") == DEFAULT_PROFILE


def test_unknown_field_is_named_with_file_and_value() -> None:
    """A misspelt field is reported with the file, the field and its value."""
    with pytest.raises(ProfileError) as info:
        parse_profile("limitz: {max_file_size_bytes: 5}\n", "acme/profile.yaml")
    assert "acme/profile.yaml: limitz: unknown field (value {'max_file_size_bytes': 5})" in str(info.value)


def test_every_problem_is_reported_not_just_the_first() -> None:
    """Three wrong fields give three problems, each with its path and value."""
    text = "limits: {max_file_size_bytes: -1}\nformats: [xlsx]\nquality: {max_bad_row_ratio: 2}\n"
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.yaml")
    problems = info.value.problems
    assert len(problems) == 3
    assert any("limits.max_file_size_bytes" in p and "-1" in p for p in problems)
    assert any("formats.0" in p and "xlsx" in p for p in problems)
    assert any("quality.max_bad_row_ratio" in p for p in problems)


def test_wrong_type_is_reported() -> None:
    """A string where a number belongs names the field and the value."""
    with pytest.raises(ProfileError, match=r"batch_apps\.0\.timeout_s.*'soon'"):
        parse_profile("batch_apps: [{name: a, timeout_s: soon}]\n", "p.yaml")


def test_not_yaml_and_not_a_mapping_are_clear() -> None:
    """Broken YAML and a top-level list are reported as such."""
    with pytest.raises(ProfileError, match="not valid YAML"):
        parse_profile("a: [1, 2\n", "p.yaml")
    with pytest.raises(ProfileError, match="expected a mapping"):
        parse_profile("- 1\n", "p.yaml")


def test_bad_pattern_and_dataset_are_rejected() -> None:
    """A regex that does not compile and an invalid dataset name are profile errors."""
    with pytest.raises(ProfileError, match="cannot be used"):
        parse_profile("quality: {rules: [{field: a, pattern: '('}]}\n", "p.yaml")
    with pytest.raises(ProfileError, match="dataset"):
        parse_profile("dataset: 'Bad Name'\n", "p.yaml")


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    """A profile path that does not exist raises ProfileError naming it."""
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "nope.yaml")


def test_app_is_chosen_by_file_pattern() -> None:
    """The first app whose pattern matches serves the file; none matches → None."""
    profile = parse_profile(
        "batch_apps: [{name: a, file_pattern: 'a_*.csv'}, {name: b, file_pattern: '*.jsonl'}]\n",
        "p",
    )
    assert profile.app_for("a_1.csv").name == "a"  # type: ignore[union-attr]
    assert profile.app_for("x.jsonl").name == "b"  # type: ignore[union-attr]
    assert profile.app_for("x.csv") is None


def test_a_pattern_that_needs_backtracking_is_refused_with_the_reason() -> None:
    """RE2 runs every pattern it accepts in linear time; a backreference (backtracking only) is
    refused by the profile check, naming the pattern and why."""
    with pytest.raises(ProfileError, match=r"pattern '\(a\)\\\\1' cannot be used: .*backreferences"):
        parse_profile("quality: {rules: [{field: a, pattern: '(a)\\1'}]}\n", "p.yaml")
