from __future__ import annotations

import pytest

from mysimbdp.domain.naming import dataset_from_stem, file_name_problems, tenant_id_problem


@pytest.mark.parametrize(
    ("name", "dataset"),
    [
        ("Flights 2013-01.csv", "flights_2013_01"),
        ("data.csv", "data"),
        ("2013.csv", "d_2013"),
        ("Ünï.jsonl", "_n_"),
    ],
)
def test_dataset_is_the_lower_cased_stem_with_other_characters_as_underscores(name: str, dataset: str) -> None:
    """The default dataset name derives from the file stem."""
    assert dataset_from_stem(name) == dataset


@pytest.mark.parametrize("name", ["a/b.csv", "..", "../x.csv", "a\\b.csv", "bad\x00.csv", "x" * 300 + ".csv"])
def test_unsafe_file_names_have_problems(name: str) -> None:
    """Path separators, '..', control characters and over-long names are refused."""
    assert file_name_problems(name)


@pytest.mark.parametrize("name", ["with space.csv", "ünïcödé.csv", "数据.jsonl"])
def test_spaces_and_unicode_are_fine(name: str) -> None:
    """Spaces and unicode letters are ordinary file names."""
    assert file_name_problems(name) == []


def test_tenant_ids_are_safe_identifiers() -> None:
    """Tenant ids become schema and role names, so only lower-case identifiers pass."""
    assert tenant_id_problem("acme_1") is None
    for bad in ("Acme", "1acme", "a-b", "", "a" * 40, "a;drop"):
        assert tenant_id_problem(bad) is not None
