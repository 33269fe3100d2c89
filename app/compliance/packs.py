"""Compliance packs shipped with the service as data (packs/*.json), checked when loaded."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

from app.compliance.engine import ACTIONS, SEVERITIES, TEXT_FIELDS, validate_config


@dataclass(frozen=True)
class PackRule:
    key: str
    name: str
    description: str
    kind: str
    config: dict[str, Any]
    severity: str
    action: str
    applies_to: tuple[str, ...]


@dataclass(frozen=True)
class Pack:
    id: str
    name: str
    description: str
    rules: tuple[PackRule, ...]


def _load(raw: dict[str, Any]) -> Pack:
    rules = []
    for rule in raw["rules"]:
        assert rule["severity"] in SEVERITIES and rule["action"] in ACTIONS, rule["key"]
        assert set(rule["appliesTo"]) <= set(TEXT_FIELDS), rule["key"]
        rules.append(
            PackRule(
                key=rule["key"],
                name=rule["name"],
                description=rule["description"],
                kind=rule["kind"],
                config=validate_config(rule["kind"], rule["config"]),
                severity=rule["severity"],
                action=rule["action"],
                applies_to=tuple(rule["appliesTo"]),
            )
        )
    return Pack(id=raw["id"], name=raw["name"], description=raw["description"], rules=tuple(rules))


@cache
def all_packs() -> dict[str, Pack]:
    folder = resources.files("app.compliance") / "packs"
    packs = [
        _load(orjson.loads(entry.read_bytes()))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]
    return {pack.id: pack for pack in packs}
