"""agentrail-verify BUNDLE --public-key KEY [--known-digest FILE ...] [--workers N] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentrail_verify.bundle import load_public_key, verify_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentrail-verify", description="Verify an Agentrail proof bundle offline.")
    parser.add_argument("bundle", help="the bundle file (an export with includeProofs)")
    parser.add_argument("--public-key", required=True, help="a trusted public key: base64, hex, PEM, or a file of one")
    parser.add_argument(
        "--known-digest", action="append", default=[], help="a digest you kept (JSON file, webhook event or its data)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes that check a large bundle (default: one per idle CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON report")
    args = parser.parse_args(argv)
    try:
        text = Path(args.public_key).read_text() if Path(args.public_key).is_file() else args.public_key
        public_key = load_public_key(text)
        known = []
        for name in args.known_digest:
            value = json.loads(Path(name).read_text())
            known.append(value.get("data", value) if isinstance(value, dict) else value)
        report = verify_file(args.bundle, public_key, known_digests=known, workers=args.workers)
    except (OSError, ValueError) as exc:
        print(f"agentrail-verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        for item in report.breaks:
            where = ", ".join(f"{k} {v}" for k, v in item.items() if k != "reason" and v is not None)
            print(f"BROKEN: {item['reason']}" + (f" ({where})" if where else ""))
        state = "OK" if report.ok else "BROKEN"
        erased = f" ({report.erased} erased: content removed, place and link verified)" if report.erased else ""
        print(
            f"{state}: {report.records} records{erased}, {report.digests} digests, {report.roots_checked} roots checked"
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
