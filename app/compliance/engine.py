"""Compiling rules and evaluating records against them. Pure: no database, no I/O.

Every text rule (PII detectors, user patterns, keyword lists) contributes RE2 patterns to ONE
multi-pattern set; a field is scanned once by that set (linear time, whatever the patterns), and only
the patterns that matched are run again to find positions and validate candidates. Numeric and action
rules are plain comparisons. A user's pattern can therefore never stall ingest.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import re2

from app.compliance.detectors import DETECTORS, redact
from app.errors import BadUserInput

KINDS = ("pii", "pattern", "keywords", "threshold", "action_match")
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
ACTIONS = ("alert", "block", "redact")
# REDACT stores the redacted text of what a rule found instead of the original: rules that find text only
REDACTING_KINDS = ("pii", "pattern", "keywords")
TEXT_FIELDS = ("prompt", "response", "metadata", "args", "result")
MAX_PATTERN_LENGTH = 2000
MAX_KEYWORDS = 500
MAX_PROGRAM_SIZE = 100_000  # RE2 program size cap for one user pattern: huge automata are refused
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_NUMERIC_ROOTS = ("metadata", "args", "result", "durationMs")


def _options() -> Any:
    options = re2.Options()
    options.max_mem = 64 << 20
    return options


def _compile(pattern: str, *, what: str) -> Any:
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        raise BadUserInput(f"{what} is not a valid RE2 regular expression: {exc}", field="config") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise BadUserInput(f"{what} compiles to too large an automaton; simplify it", field="config")
    return compiled


# --- config validation (per kind) --------------------------------------------------------------
def _keyword_pattern(keywords: Sequence[str]) -> str:
    parts = []
    for keyword in keywords:
        escaped = re2.escape(keyword)
        # \b only where the keyword itself begins or ends with a word character
        start = r"\b" if keyword[0].isalnum() or keyword[0] == "_" else ""
        end = r"\b" if keyword[-1].isalnum() or keyword[-1] == "_" else ""
        parts.append(f"{start}{escaped}{end}")
    return "(?i)(" + "|".join(parts) + ")"


def validate_config(kind: str, config: Any) -> dict[str, Any]:
    """Checks and normalises a rule's config for its kind; BAD_USER_INPUT naming the problem."""
    if kind not in KINDS:
        raise BadUserInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if not isinstance(config, dict):
        raise BadUserInput("config must be a JSON object", field="config")
    if kind == "pii":
        types = config.get("types") or list(DETECTORS)
        unknown = sorted(set(types) - set(DETECTORS)) if isinstance(types, list) else ["?"]
        if unknown:
            raise BadUserInput(f"unknown PII types {unknown}; known: {sorted(DETECTORS)}", field="config")
        return {"types": sorted(set(types))}
    if kind == "pattern":
        pattern = config.get("pattern")
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
            raise BadUserInput(
                f"config.pattern must be a regular expression of 1–{MAX_PATTERN_LENGTH} characters", field="config"
            )
        case_insensitive = bool(config.get("caseInsensitive", False))
        _compile(("(?i)" if case_insensitive else "") + pattern, what="config.pattern")
        return {"pattern": pattern, "caseInsensitive": case_insensitive}
    if kind == "keywords":
        keywords = config.get("keywords")
        if (
            not isinstance(keywords, list)
            or not 1 <= len(keywords) <= MAX_KEYWORDS
            or not all(isinstance(k, str) and 0 < len(k.strip()) <= 100 for k in keywords)
        ):
            raise BadUserInput(f"config.keywords must be 1–{MAX_KEYWORDS} words of 1–100 characters", field="config")
        cleaned = sorted({k.strip().lower() for k in keywords})
        _compile(_keyword_pattern(cleaned), what="config.keywords")
        return {"keywords": cleaned}
    if kind == "threshold":
        path, op, value = config.get("path"), config.get("operator"), config.get("value")
        if not isinstance(path, str) or path.split(".")[0] not in _NUMERIC_ROOTS or len(path) > 200:
            raise BadUserInput(
                "config.path must be durationMs or a path under metadata, args or result (e.g. metadata.tokens)",
                field="config",
            )
        if op not in _OPERATORS:
            raise BadUserInput(f"config.operator must be one of {' '.join(_OPERATORS)}", field="config")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadUserInput("config.value must be a number", field="config")
        return {"path": path, "operator": op, "value": value}
    # action_match
    lists = {}
    for key in ("actions", "verbs", "providers", "riskLevels"):
        values = config.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in values):
            raise BadUserInput(f"config.{key} must be a list of strings", field="config")
        lists[key] = values
    if not (lists["actions"] or lists["verbs"] or lists["providers"]):
        raise BadUserInput("config needs at least one of actions, verbs, providers", field="config")
    if any(level not in SEVERITIES for level in lists["riskLevels"]):
        raise BadUserInput(f"config.riskLevels must be among {', '.join(SEVERITIES)}", field="config")
    return lists


def action_problem(kind: str, action: str) -> str | None:
    """Why `action` cannot be a `kind` rule's action (None when it can): one check for rules and policies."""
    if action not in ACTIONS:
        return "must be ALERT, BLOCK or REDACT"
    if action == "redact" and kind not in REDACTING_KINDS:
        return "REDACT applies to the rules that find text (PII, PATTERN, KEYWORDS) only"
    return None


# --- compiled rules ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleSpec:
    """What the engine needs of a rule (from the organisation's rules or a policy version's snapshot)."""

    id: str
    name: str
    kind: str
    config: Mapping[str, Any]
    severity: str
    action: str
    applies_to: tuple[str, ...]
    policy_id: str | None = None
    policy_version: int | None = None


@dataclass
class Finding:
    rule: RuleSpec
    field: str
    start: int | None
    end: int | None
    excerpt: str
    message: str


@dataclass
class _TextPattern:
    rule_index: int
    regex: Any
    validate: Callable[[str, str], bool] | None
    label: str
    secret: bool = False


@dataclass
class RuleSet:
    rules: list[RuleSpec]
    _set: Any = None
    _patterns: list[_TextPattern] = field(default_factory=list)
    _numeric: list[int] = field(default_factory=list)
    _action: list[int] = field(default_factory=list)
    # the rules whose findings are stored redacted: action REDACT, or a PII rule of an organisation that
    # redacts PII by default (its compliance settings)
    _redacting: frozenset[int] = frozenset()

    redact_pii: bool = False  # the organisation's default it was compiled with

    @property
    def empty(self) -> bool:
        return not self.rules


def compile_rules(rules: Iterable[RuleSpec], *, redact_pii: bool = False) -> RuleSet:
    """`redact_pii`: the organisation's default, every PII rule also stores what it finds redacted."""
    ruleset = RuleSet(rules=[r for r in rules], redact_pii=redact_pii)
    ruleset._redacting = frozenset(
        index
        for index, rule in enumerate(ruleset.rules)
        if rule.action == "redact" or (redact_pii and rule.kind == "pii")
    )
    texts: list[str] = []
    for index, rule in enumerate(ruleset.rules):
        if rule.kind == "pii":
            for key in rule.config.get("types", []):
                detector = DETECTORS[key]
                texts.append(detector.pattern)
                ruleset._patterns.append(
                    _TextPattern(
                        index,
                        _compile(detector.pattern, what=key),
                        detector.validate,
                        detector.label,
                        secret=key == "secret",
                    )
                )
        elif rule.kind in ("pattern", "keywords"):
            if rule.kind == "pattern":
                source = ("(?i)" if rule.config.get("caseInsensitive") else "") + rule.config["pattern"]
                label = "pattern"
            else:
                source = _keyword_pattern(rule.config["keywords"])
                label = "denied keyword"
            texts.append(source)
            ruleset._patterns.append(_TextPattern(index, _compile(source, what=rule.name), None, label))
        elif rule.kind == "threshold":
            ruleset._numeric.append(index)
        else:
            ruleset._action.append(index)
    if texts:
        multi = re2.Set.SearchSet(_options())
        for text in texts:
            multi.Add(text)
        multi.Compile()
        ruleset._set = multi
    return ruleset


def _field_texts(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in TEXT_FIELDS:
        value = record.get(name)
        if value is None or value == {} or value == []:
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        out.append((name, text))
    return out


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    if path == "durationMs":
        return record.get("duration_ms")
    node: Any = record
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _glob(value: str | None, patterns: Sequence[str]) -> bool:
    if value is None:
        return False
    return any(value == p or (p.endswith("*") and value.startswith(p[:-1])) for p in patterns)


def evaluate(ruleset: RuleSet, record: Mapping[str, Any]) -> list[Finding]:
    """Findings for one record (column-named dict: prompt, response, metadata, args, result, action, verb,
    provider, risk_level, duration_ms). At most one finding per rule: the first match, with a count."""
    if ruleset.empty:
        return []
    found: dict[int, Finding] = {}
    counts: dict[int, int] = {}
    labels: dict[int, list[str]] = {}
    if ruleset._set is not None:
        for field_name, text in _field_texts(record):
            hits = ruleset._set.Match(text)
            if not hits:
                continue
            for pattern_index in hits:
                pattern = ruleset._patterns[pattern_index]
                rule = ruleset.rules[pattern.rule_index]
                if field_name not in rule.applies_to:
                    continue
                for match in pattern.regex.finditer(text):
                    group = 1 if match.groups() else 0
                    candidate = match.group(group)
                    if pattern.validate is not None and not pattern.validate(candidate, match.group(0)):
                        continue
                    counts[pattern.rule_index] = counts.get(pattern.rule_index, 0) + 1
                    seen = labels.setdefault(pattern.rule_index, [])
                    if pattern.label not in seen:
                        seen.append(pattern.label)
                    if pattern.rule_index not in found:
                        start, end = match.span(group)
                        excerpt = "[REDACTED]" if pattern.secret else redact(candidate)
                        found[pattern.rule_index] = Finding(rule, field_name, start, end, excerpt, pattern.label)
    for index in ruleset._numeric:
        rule = ruleset.rules[index]
        value = _lookup(record, rule.config["path"])
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if _OPERATORS[rule.config["operator"]](value, rule.config["value"]):
            found[index] = Finding(
                rule,
                rule.config["path"].split(".")[0],
                None,
                None,
                str(value)[:40],
                f"{rule.config['path']} = {value} {rule.config['operator']} {rule.config['value']}",
            )
    for index in ruleset._action:
        rule = ruleset.rules[index]
        config = rule.config
        matched = (
            _glob(record.get("action"), config.get("actions", []))
            or _glob(record.get("verb"), config.get("verbs", []))
            or _glob(record.get("provider"), config.get("providers", []))
        )
        if matched and (not config.get("riskLevels") or record.get("risk_level") in config["riskLevels"]):
            what = record.get("verb") or record.get("action")
            found[index] = Finding(rule, "action", None, None, str(what)[:120], f"watched action {what}")
    for index, finding in found.items():
        count = counts.get(index, 1)
        detail = ", ".join(labels.get(index, [finding.message])) + (f" ({count} matches)" if count > 1 else "")
        finding.message = f"{finding.rule.name}: {detail} in {finding.field}"[:500]
    return list(found.values())


# --- redaction (REDACT) ---------------------------------------------------------------------------
def redact_record(ruleset: RuleSet, record: dict[str, Any], findings: Sequence[Finding]) -> bool:
    """Replaces, in `record`'s content fields (in place), every match of the redacting rules among
    `findings` by its redacted form (`***-**-6789`; secrets and long matches `[REDACTED]`), in text and in
    every string of the JSON fields (their structure and keys are kept). Returns whether anything changed.
    Runs in the ingest transaction before the checksum, so the original is never stored."""
    found = {id(f.rule) for f in findings}
    patterns = [
        p for p in ruleset._patterns if p.rule_index in ruleset._redacting and id(ruleset.rules[p.rule_index]) in found
    ]
    if not patterns:
        return False
    changed = False
    for name in TEXT_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        here = [p for p in patterns if name in ruleset.rules[p.rule_index].applies_to]
        if not here:
            continue
        redacted = _redact_json(value, here)
        if redacted is not value:
            record[name] = redacted
            changed = True
    return changed


def _redact_json(value: Any, patterns: Sequence[_TextPattern]) -> Any:
    """`value` itself when nothing in it matched, else a new value (containers copied)."""
    if isinstance(value, str):
        return _redact_text(value, patterns)
    if isinstance(value, dict):
        items = {k: _redact_json(v, patterns) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list):
        new = [_redact_json(v, patterns) for v in value]
        return value if all(a is b for a, b in zip(new, value, strict=True)) else new
    return value


def _redact_text(text: str, patterns: Sequence[_TextPattern]) -> str:
    spans: list[tuple[int, int, str]] = []
    for pattern in patterns:
        for match in pattern.regex.finditer(text):
            group = 1 if match.groups() else 0
            candidate = match.group(group)
            if not candidate or (pattern.validate is not None and not pattern.validate(candidate, match.group(0))):
                continue
            start, end = match.span(group)
            masked = "[REDACTED]" if pattern.secret or len(candidate) > 120 else redact(candidate)
            spans.append((start, end, masked))
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    position = 0
    for start, end, masked in spans:
        if start < position:  # overlaps a match already replaced
            continue
        parts.append(text[position:start])
        parts.append(masked)
        position = end
    parts.append(text[position:])
    redacted = "".join(parts)
    return text if redacted == text else redacted
