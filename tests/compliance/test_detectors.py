"""The rules engine alone: detectors with true positives and near misses, and linear-time patterns."""

from __future__ import annotations

import time

import pytest

from app.compliance.engine import RuleSpec, compile_rules, evaluate, validate_config
from app.errors import BadUserInput

ALL_FIELDS = ("prompt", "response", "metadata", "args", "result")


def _ruleset(kind: str, config: dict, **extra):
    spec = RuleSpec(id="r", name="rule", kind=kind, config=validate_config(kind, config), severity="HIGH",
                    action=extra.get("action", "alert"), applies_to=extra.get("applies_to", ALL_FIELDS))  # fmt: skip
    return compile_rules([spec])


def _hits(kind: str, config: dict, record: dict) -> list:
    return evaluate(_ruleset(kind, config), record)


@pytest.mark.parametrize(
    ("pii", "text", "excerpt"),
    [
        ("ssn", "my SSN is 123-45-6789.", "***-**-6789"),
        ("credit_card", "card 4111 1111 1111 1111 exp 12/29", "**** **** **** 1111"),
        ("credit_card", "amex 378282246310005", "***********0005"),
        ("iban", "pay to DE89 3704 0044 0532 0130 00 today", "**** **** **** **** **30 00"),
        ("email", "write to jane.doe@example.org", "****.***@******e.org"),
        ("phone", "call +1 (415) 555-2671 now", "+* (***) ***-2671"),
        ("phone", "call 415-555-2671", "***-***-2671"),
        ("ipv4", "from 192.168.10.42 at noon", "***.***.10.42"),
        ("ipv6", "host 2001:db8::8a2e:370:7334 up", None),
        ("date_of_birth", "DOB: 03/12/1980", "**/**/1980"),
        ("date_of_birth", "born on March 12, 1980", None),
        ("passport", "passport no. X12345678", None),
        ("drivers_license", "driver's license D1234-5678", None),
        ("medical_record_number", "MRN: 00123456", None),
        ("secret", "token [REDACTED] leaked", "[REDACTED]"),
    ],
)
def test_detectors_find_the_real_thing(pii, text, excerpt):
    [finding] = _hits("pii", {"types": [pii]}, {"prompt": text})
    assert finding.field == "prompt"
    assert finding.start is not None and text[finding.start : finding.end]
    if excerpt:
        assert finding.excerpt == excerpt
    # the sensitive value itself is never in the excerpt or the message
    sensitive = text[finding.start : finding.end]
    if pii != "secret":
        assert sensitive not in finding.excerpt and sensitive not in finding.message


@pytest.mark.parametrize(
    ("pii", "text"),
    [
        ("ssn", "000-12-3456"),
        ("ssn", "666-12-3456"),
        ("ssn", "912-12-3456"),
        ("ssn", "123-00-4567"),
        ("ssn", "123-45-0000"),
        ("credit_card", "4111 1111 1111 1112"),  # Luhn fails
        ("credit_card", "0000 0000 0000 0000"),
        ("credit_card", "order 1234567812345678"),
        ("iban", "DE89 3704 0044 0532 0130 01"),  # checksum fails
        ("email", "user@localhost"),
        ("phone", "order #4155552671"),  # a bare digit run is an order number
        ("phone", "version 1.2.3"),
        ("ipv4", "999.1.1.1"),
        ("ipv4", "0.0.0.0"),
        ("date_of_birth", "DOB: 13/45/1980"),
        ("date_of_birth", "the meeting on 03/12/1980"),  # no keyword
        ("passport", "passport photos attached"),
        ("medical_record_number", "MRN pending"),
    ],
)
def test_near_misses_do_not_alert(pii, text):
    assert _hits("pii", {"types": [pii]}, {"prompt": text}) == []


def test_pattern_keywords_threshold_and_action_match():
    assert _hits("pattern", {"pattern": r"project-\d{3}"}, {"response": "see project-042"})[0].field == "response"
    assert _hits("pattern", {"pattern": "secret", "caseInsensitive": True}, {"prompt": "TOP SECRET"})
    assert not _hits("pattern", {"pattern": "secret"}, {"prompt": "TOP SECRET"})
    keywords = {"keywords": ["bomb", "kill switch", "c++"]}
    assert _hits("keywords", keywords, {"prompt": "where is the Kill Switch?"})
    assert _hits("keywords", keywords, {"prompt": "I write C++ daily"})
    assert not _hits("keywords", keywords, {"prompt": "the bombastic style"})  # word boundaries
    threshold = {"path": "metadata.tokens", "operator": ">", "value": 8000}
    assert _hits("threshold", threshold, {"metadata": {"tokens": 8001}})
    assert not _hits("threshold", threshold, {"metadata": {"tokens": 8000}})
    assert not _hits("threshold", threshold, {"metadata": {"tokens": "lots"}})
    duration = {"path": "durationMs", "operator": ">=", "value": 30000}
    assert _hits("threshold", duration, {"duration_ms": 30000.0})
    refunds = {"verbs": ["stripe:create_refund"], "riskLevels": ["HIGH", "CRITICAL"]}
    assert _hits("action_match", refunds, {"verb": "stripe:create_refund", "risk_level": "HIGH"})
    assert not _hits("action_match", refunds, {"verb": "stripe:create_refund", "risk_level": "LOW"})
    assert _hits("action_match", {"verbs": ["bank:*"]}, {"verb": "bank:transfer"})


def test_applies_to_limits_the_fields():
    ruleset = _ruleset("keywords", {"keywords": ["secret"]}, applies_to=("response",))
    assert evaluate(ruleset, {"prompt": "secret"}) == []
    assert evaluate(ruleset, {"response": "secret"})
    nested = _ruleset("pii", {"types": ["email"]})
    [finding] = evaluate(nested, {"metadata": {"user": {"contact": "a@example.com"}}})
    assert finding.field == "metadata"


def test_invalid_configs_are_rejected():
    bad = [
        ("pattern", {"pattern": "(unclosed"}),
        ("pattern", {"pattern": r"(a)\1"}),  # backreferences are not linear-time: RE2 refuses them
        ("pattern", {"pattern": ""}),
        ("keywords", {"keywords": []}),
        ("keywords", {"keywords": ["x" * 101]}),
        ("pii", {"types": ["dna"]}),
        ("threshold", {"path": "prompt.length", "operator": ">", "value": 1}),
        ("threshold", {"path": "metadata.x", "operator": "~", "value": 1}),
        ("threshold", {"path": "metadata.x", "operator": ">", "value": "1"}),
        ("action_match", {}),
        ("action_match", {"verbs": ["x"], "riskLevels": ["EXTREME"]}),
        ("nope", {}),
    ]
    for kind, config in bad:
        with pytest.raises(BadUserInput):
            validate_config(kind, config)


def test_pathological_pattern_is_linear():
    ruleset = _ruleset("pattern", {"pattern": "(a+)+$"})
    text = "a" * 200_000 + "!"
    started = time.perf_counter()
    assert evaluate(ruleset, {"prompt": text}) == []
    assert time.perf_counter() - started < 1.0  # a backtracking engine would take longer than the universe


def test_one_finding_per_rule_with_a_count():
    [finding] = _hits("pii", {"types": ["ssn"]}, {"prompt": "123-45-6789 and 234-56-7890"})
    assert "2 matches" in finding.message
