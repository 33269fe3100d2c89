"""Cost of masking one realistic audit record (app.masking.mask_record), in-process.

    .venv/bin/python bench/masking.py [--iterations 5000]

A record: a 2,000-character prompt, a 600-character response, metadata with 20 keys (strings, numbers,
a URL, a list, a nested object), small args and result. Prints JSON: µs per record (median of several
rounds) with no secrets, and with a few secrets (a key in the prompt, a Bearer header in the response, a
password under a secret key and a database URL in metadata), plus the 2,000-character prompt alone, and
a prompt dense in trigger words (`key`, `token`, `pass`, `_`, `-`, `:`, `=`) but still free of secrets.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.masking import mask_record, mask_text

_VOCABULARY = (
    "the agent should summarise the customer ticket and propose next steps for the support team including "
    "refund policy details order history shipping status and escalation path when needed analysis report "
    "quarterly revenue forecast compare region growth churn retention cohort invoice payment address review"
)
WORDS = _VOCABULARY.split()
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEF0123456789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def prose(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def record(rng: random.Random, *, secrets: bool) -> dict[str, Any]:
    prompt = prose(rng, 2000)
    response = prose(rng, 600)
    metadata: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 1024,
        "input_tokens": 1530,
        "output_tokens": 212,
        "user_id": "usr_01HX3K9Z8Q7W6E5R4T3Y2U",
        "session": "conv-8842",
        "region": "eu-west-1",
        "tool": "search_orders",
        "latency_ms": 412,
        "customer_tier": "gold",
        "channel": "email",
        "locale": "en-GB",
        "retry": 0,
        "cached": False,
        "endpoint": "https://api.example.com/v1/orders",
        "tags": ["refund", "priority"],
        "run_id": "run_7f3a9c2b",
        "ticket": {"id": "T-48213", "queue": "billing"},
        "notes": "customer asked about refund timing for order 48213",
    }
    if secrets:
        key = "sk" + "-proj-" + "".join(rng.choice(KEY_ALPHABET) for _ in range(64))
        prompt = prompt[:1000] + f" use {key} to call the API " + prompt[1000:1930]
        response = f"Sent with Authorization: Bearer {JWT} " + response
        metadata["db_password"] = "hunter2hunter2"
        metadata["endpoint"] = "postgres://svc:s3cr3t-pass@db.internal:5432/app"
    return {
        "prompt": prompt,
        "response": response,
        "metadata": metadata,
        "args": {"order_id": "ord_48213", "limit": 10},
        "result": {"status": "ok", "count": 3},
    }


def per_call_us(fn: Any, arg: Any, iterations: int, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(iterations):
            fn(arg)
        samples.append((time.perf_counter() - started) / iterations * 1e6)
    return round(statistics.median(samples), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=5000)
    iterations = parser.parse_args().iterations
    rng = random.Random(7)
    clean = record(rng, secrets=False)
    dirty = record(rng, secrets=True)
    assert mask_record(clean)[1] is False and mask_record(dirty)[1] is True
    dense = (
        "Summarise the key points. Each token costs money; pass the result to the next tool. See "
        "https://docs.example.com/guide: the author notes that the secret to good support is empathy, "
        "e-mail and auth_flow=standard in config_v2. "
    ) * 12
    dense = dense[:2000]
    assert mask_text(dense)[1] is False
    result = {
        "python": platform.python_version(),
        "iterations": iterations,
        "us_per_record_no_secrets": per_call_us(mask_record, clean, iterations),
        "us_per_record_with_secrets": per_call_us(mask_record, dirty, iterations),
        "us_prompt_2000_chars_no_secrets": per_call_us(mask_text, clean["prompt"], iterations),
        "us_prompt_2000_chars_dense_trigger_words": per_call_us(mask_text, dense, iterations),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
