"""The study's profiles: the one loader of ``profiles.yaml``.

A profile (``smoke``, ``default``, ``robust``, ``paper``) sets sizes, never code paths. It has sections,
one per thing it sizes; :data:`SECTIONS` names each section and the settings class whose fields are its
keys, so an unknown section or key is an error naming it (and the known ones) wherever a profile is read.
Everything else asks this module: :func:`names` for the profiles (the CLI's ``--profile`` choices),
:func:`section` for a profile's section as a plain dict, :func:`check` to validate a whole profile.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
from pathlib import Path
from typing import Any

import yaml

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")

#: Section → the dataclass (``module:Class``) whose fields are its keys, or the keys themselves.
SECTIONS: dict[str, str | tuple[str, ...]] = {
    "simulate": "polar4d_lib.datasets:DatasetSpec",  # the profile's dataset
    "train": "polar4d_lib.recipes:TrainSettings",  # the training chapter's runs
    "default_model": "polar4d_lib.recipes:TrainSettings",  # the shipped model's pattern candidates
    "stack_model": "polar4d_lib.recipes:TrainSettings",  # its cell-stack candidate
    "window_choice": ("min_electrons",),  # the electrons-per-window grid the candidates choose from
    "explore": "polar4d_lib.wall_scan:WallScanSpec",  # the explorer's wall scan
    "realistic": "polar4d_lib.realistic:RealisticRanges",  # the scans a default model is chosen on
    "realistic_test": "polar4d_lib.realistic:RealisticRanges",  # the independent scans it is judged on
    "domain_gap": "polar4d_lib.suites:GapSettings",  # the domain-gap chapter's test suites
    "periodicity": "polar4d_lib.periodicity:PeriodicitySettings",  # the error-periodicity chapter's scans
    "defects": "polar4d_lib.defects:DefectSettings",  # the defect chapter's specimens and scans
}


@functools.cache
def _profiles() -> dict[str, dict[str, Any]]:
    profiles = yaml.safe_load(PROFILES_FILE.read_text())
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ValueError(f"{PROFILES_FILE} must map each profile name to its sections")
    return profiles


def settings_of(profile: str) -> dict[str, Any]:
    """Every section of ``profile`` as plain data (a copy): what a chapter's results depend on."""
    return {name: section(profile, name) for name in SECTIONS}


def names() -> tuple[str, ...]:
    """The profiles, in the file's order."""
    return tuple(_profiles())


def has_section(profile: str, name: str) -> bool:
    """Whether ``profile`` sets section ``name``, without validating its keys (which imports the section's
    settings class: the command line's choices must not pull in torch and abTEM)."""
    return bool((_profiles().get(profile) or {}).get(name))


def _known_keys(name: str) -> set[str]:
    spec = SECTIONS[name]
    if isinstance(spec, tuple):
        return set(spec)
    module, cls = spec.split(":")
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}


def settings_values(cls: type, profile: str, name: str, overrides: dict[str, Any] | None = None,
                    tuples: tuple[str, ...] = (), nested: dict[str, type] | None = None,
                    label: str | None = None) -> dict[str, Any]:
    """The keyword arguments of settings dataclass ``cls`` from ``profile``'s section ``name``, ``overrides``
    replacing its keys: an unknown key is a KeyError naming it (as a ``label``, default "<name> setting"); the
    lists of ``tuples`` become tuples and the mappings of ``nested`` (key → class) become instances of their class."""
    from polar4d_lib import config

    values = {**section(profile, name), **(overrides or {})}
    config.check_known_keys(values, cls.__dataclass_fields__, label or f"{name.replace('_', '-')} setting", KeyError)
    for key in tuples:
        if key in values:
            values[key] = tuple(values[key])
    for key, kind in (nested or {}).items():
        if key in values:
            values[key] = kind(**values[key])
    return values


def section(profile: str, name: str) -> dict[str, Any]:
    """``profile``'s section ``name`` (a copy; empty where the profile does not set it). One-line errors
    for an unknown profile, section or key."""
    profiles = _profiles()
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(profiles)}")
    if name not in SECTIONS:
        raise ValueError(f"unknown profile section {name!r}; known: {', '.join(SECTIONS)}")
    values = profiles[profile].get(name) or {}
    unknown = sorted(set(values) - _known_keys(name))
    if unknown:
        raise KeyError(f"profile {profile!r}, section {name!r}: unknown key(s) {unknown}; "
                       f"known: {sorted(_known_keys(name))} ({PROFILES_FILE.name})")
    return copy.deepcopy(dict(values))


def check(profile: str) -> dict[str, dict[str, Any]]:
    """Every section of ``profile``, validated (unknown sections and keys are errors naming them)."""
    profiles = _profiles()
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(profiles)}")
    unknown = sorted(set(profiles[profile]) - set(SECTIONS))
    if unknown:
        raise KeyError(f"profile {profile!r}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)} "
                       f"({PROFILES_FILE.name})")
    return {name: section(profile, name) for name in profiles[profile]}
