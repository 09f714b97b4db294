"""The profiles registry: every profile loads, every section and key is known, unknown ones are errors."""

from __future__ import annotations

import pytest
import yaml

from polar4d_lib import cli, profiles


def test_the_four_profiles_and_every_section_load():
    assert profiles.names() == ("smoke", "default", "robust", "paper")
    for name in profiles.names():
        sections = profiles.check(name)
        assert "simulate" in sections and sections["simulate"]["variants"]


def test_a_section_is_a_copy():
    first = profiles.section("robust", "realistic_test")
    first["seed"] = -1
    assert profiles.section("robust", "realistic_test")["seed"] == 2030


@pytest.mark.parametrize("bad, message", [
    ({"smoke": {"simulat": {}}}, r"profile 'smoke': unknown section\(s\) \['simulat'\]"),
    ({"smoke": {"train": {"max_epoch": 2}}}, r"profile 'smoke', section 'train': unknown key\(s\) \['max_epoch'\]"),
    ({"smoke": {"window_choice": {"electrons": [1]}}}, r"unknown key\(s\) \['electrons'\]; known: \['min_electrons'\]"),
])
def test_unknown_sections_and_keys_are_errors_naming_them(tmp_path, monkeypatch, bad, message):
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(bad))
    monkeypatch.setattr(profiles, "PROFILES_FILE", path)
    profiles._profiles.cache_clear()
    try:
        with pytest.raises(KeyError, match=message):
            profiles.check("smoke")
    finally:
        profiles._profiles.cache_clear()


def test_unknown_profile_and_section():
    with pytest.raises(ValueError, match="unknown profile 'huge'; use one of smoke, default, robust, paper"):
        profiles.section("huge", "simulate")
    with pytest.raises(ValueError, match="unknown profile section 'trian'"):
        profiles.section("smoke", "trian")


def test_cli_profile_choices_come_from_the_registry():
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    assert tuple(next(a for a in sub.choices["book"]._actions if a.dest == "profile").choices) == profiles.names()
    default_model = next(a for a in sub.choices["default-model"]._actions if a.dest == "profile").choices
    assert list(default_model) == ["smoke", "robust"]
