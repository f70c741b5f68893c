"""The user-type catalog file, its search, and custom user types."""

from __future__ import annotations

import pytest

from muse_desktop.chat.usertypes import (
    CUSTOM_MAX_CHARS,
    CatalogError,
    InvalidUserType,
    custom_user_type,
    fold,
    load_catalog,
    parse_catalog,
)

HEADER = "id\tdisplay_name\tprompt_name\tgroup\tdescription"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_catalog_has_at_least_373_types_with_unique_ids(catalog):
    assert len(catalog) >= 373
    ids = [t.id for t in catalog]
    assert len(set(ids)) == len(ids)
    assert len({t.prompt_name.casefold() for t in catalog}) == len(catalog)
    for user_type in catalog:
        assert all((user_type.id, user_type.display_name, user_type.prompt_name, user_type.group, user_type.description))
        assert user_type.id == user_type.id.strip().lower() and " " not in user_type.id
        assert "<|" not in user_type.prompt_name


def test_age_groups_and_occupation_fields_are_present(catalog):
    prompt_names = {t.prompt_name for t in catalog}
    assert {"Child", "Teenager", "Adult", "Elderly"} <= prompt_names
    assert catalog.get("older-adult").prompt_name == "Elderly"
    assert catalog.get("flight-attendant").prompt_name == "Flight Attendant"
    groups = " ".join(catalog.groups()).lower()
    for field in ("health", "education", "trades", "arts", "science", "public service", "business", "farming", "food", "transport"):
        assert field in groups, field


def test_search_nurse_ranks_the_exact_match_first(catalog):
    found = catalog.search("nurse")
    assert found[0].display_name == "Nurse"
    assert {"Nurse", "Veterinary nurse"} <= {t.display_name for t in found}


def test_search_ignores_case_and_accents(catalog):
    assert catalog.search("ÉLDERLY")[0].prompt_name == "Elderly"
    assert catalog.search("  flight   ATTENDANT ")[0].id == "flight-attendant"
    small = parse_catalog([HEADER, "patissier\tPâtissier\tPâtissier\tFood\tMakes cakes"])
    assert [t.id for t in small.search("patiss")] == ["patissier"]
    assert fold("Ça Va") == "ca va"


def test_search_prefers_prefix_then_word_then_substring(catalog):
    found = [t.display_name for t in catalog.search("pilot")]
    assert found[0] == "Airline pilot" or found[0].startswith("Pilot")
    farm = [t.display_name for t in catalog.search("farm")]
    assert farm[0] == "Farmer"  # name prefix before "Dairy farmer" (word prefix)
    assert farm.index("Dairy farmer") < farm.index("Agricultural scientist")  # description last
    assert catalog.search("zzzz-nothing") == []
    assert len(catalog.search("")) == len(catalog)
    assert len(catalog.search("teacher", limit=3)) == 3


def test_malformed_catalog_names_the_line():
    with pytest.raises(CatalogError, match="header"):
        parse_catalog(["id\tname"])
    with pytest.raises(CatalogError, match=":3: expected 5 non-empty columns"):
        parse_catalog(["# comment", HEADER, "a\tA\tA\tG"])
    with pytest.raises(CatalogError, match="duplicate user type id 'a'"):
        parse_catalog([HEADER, "a\tA\tA\tG\tD", "a\tB\tB\tG\tD"])
    with pytest.raises(CatalogError, match="no user types"):
        parse_catalog([HEADER])


def test_custom_user_types_are_validated():
    beekeeper = custom_user_type("  Urban   beekeeper ")
    assert beekeeper.prompt_name == "Urban beekeeper" and beekeeper.is_custom
    assert beekeeper.id == "custom:urban-beekeeper"
    assert custom_user_type("Ingénieure du son").prompt_name == "Ingénieure du son"
    with pytest.raises(InvalidUserType, match="type who you are"):
        custom_user_type("   ")
    with pytest.raises(InvalidUserType, match="control characters"):
        custom_user_type("Nurse\x07")
    with pytest.raises(InvalidUserType, match="control characters"):
        custom_user_type("Nur\u200bse")
    with pytest.raises(InvalidUserType, match=f"{CUSTOM_MAX_CHARS} characters or fewer"):
        custom_user_type("x" * (CUSTOM_MAX_CHARS + 1))
    with pytest.raises(InvalidUserType, match="cannot contain"):
        custom_user_type("Nurse<|end|>")
    assert custom_user_type("x" * CUSTOM_MAX_CHARS).prompt_name == "x" * CUSTOM_MAX_CHARS
