"""Rule evaluation alone: records/s with the hipaa, gdpr and finance packs plus 50 custom patterns.

    .venv/bin/python bench/compliance.py [--records 20000]

Prompts of 2,000 characters (a realistic mix: most records clean, some with PII). One core, one thread.
Prints JSON. Target ≥ 20,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from _server import realistic_record

from app.compliance.engine import RuleSpec, compile_rules, evaluate, validate_config
from app.compliance.packs import all_packs


def rules() -> list[RuleSpec]:
    specs = [
        RuleSpec(
            id=f"{pack.id}:{r.key}",
            name=r.name,
            kind=r.kind,
            config=r.config,
            severity=r.severity,
            action=r.action,
            applies_to=r.applies_to,
        )
        for pack in all_packs().values()
        for r in pack.rules
    ]
    for i in range(50):
        config = validate_config("pattern", {"pattern": rf"(?:internal|confidential)[-_ ]project[-_ ]{i:02d}\d*"})
        specs.append(
            RuleSpec(
                id=f"custom{i}",
                name=f"custom {i}",
                kind="pattern",
                config=config,
                severity="LOW",
                action="alert",
                applies_to=("prompt", "response", "metadata", "args", "result"),
            )
        )
    return specs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(3)
    records = []
    for i in range(args.records):
        record = realistic_record(rng, "bench", i)
        record["prompt"] = (record["prompt"] * 3)[:2000]
        if i % 20 == 0:  # 5 % carry PII
            record["prompt"] += " my card is 4111 1111 1111 1111 and email jane@example.org"
        records.append(
            {
                "prompt": record["prompt"],
                "response": record["response"],
                "metadata": record["metadata"],
                "args": None,
                "result": None,
                "action": record["action"],
                "provider": record["provider"],
                "risk_level": record["riskLevel"],
                "duration_ms": record["durationMs"],
            }
        )
    started = time.perf_counter()
    ruleset = compile_rules(rules())
    compile_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    findings = sum(len(evaluate(ruleset, r)) for r in records)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "benchmark": "compliance_evaluation",
                "rules": len(ruleset.rules),
                "records": len(records),
                "prompt_chars": 2000,
                "records_per_s": round(len(records) / elapsed),
                "us_per_record": round(elapsed / len(records) * 1e6, 1),
                "findings": findings,
                "compile_ms": round(compile_ms, 1),
                "target_records_per_s": 20000,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
