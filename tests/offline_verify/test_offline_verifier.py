"""The offline verifier gives the same report whether it checks a bundle in one process or in runs spread over
worker processes (in memory or over byte ranges of the file), for a sound bundle and for every kind of damage:
the runs are joined in chain order, the Merkle tree across their edges, the first break as a single run finds it."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "sdk" / "verify" / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from agentrail_verify import bundle  # noqa: E402

# bench/verify.py builds a bundle as the server writes it (loaded by path: `verify` is no package name to rely on)
_spec = importlib.util.spec_from_file_location("bench_verify", ROOT / "bench" / "verify.py")
assert _spec is not None and _spec.loader is not None
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
build = _bench.build


@pytest.fixture(scope="module")
def sample():
    return build(1500, 333)  # digests at sizes that fall inside runs and at no power of two


@pytest.fixture
def small_runs(monkeypatch):
    # runs of 37 records (unaligned with the tree), parallel from 100 records on
    monkeypatch.setattr(bundle, "PARALLEL_MIN_RECORDS", 100)
    monkeypatch.setattr(bundle, "_RUN_RECORDS", 37)


def _damaged(lines: list[bytes], kind: str, at: int) -> list[bytes]:
    lines = list(lines)
    if kind == "edit":
        lines[at] = lines[at].replace(b"USD", b"EUR", 1) if b"USD" in lines[at] else lines[at][:-3] + b"abc"
    elif kind == "header":
        lines[at] = lines[at][:60] + b"x" + lines[at][61:]
    elif kind == "delete":
        del lines[at]
    elif kind == "swap":
        lines[at], lines[at + 1] = lines[at + 1], lines[at]
    elif kind == "cut":
        lines = lines[:at]
    return lines


def _reports(lines: list[bytes], public_key: bytes, tmp_path: Path, monkeypatch) -> list[dict]:
    path = tmp_path / f"bundle-{len(list(tmp_path.iterdir()))}.ndjson"  # never a file a worker may still map
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = bundle.verify_lines(lines, public_key, workers=1).as_json()
    spread = bundle.verify_lines(lines, public_key, workers=3).as_json()
    streamed = bundle.verify_file(str(path), public_key, workers=1).as_json()
    with monkeypatch.context() as patch:
        patch.setattr(bundle, "PARALLEL_MIN_RECORDS", 1)  # byte ranges of 4 MB: a few for this file
        patch.setattr(bundle, "_tasks", _small_byte_ranges)
        ranges = bundle.verify_file(str(path), public_key, workers=3).as_json()
    return [one, spread, streamed, ranges]


_tasks = bundle._tasks


def _small_byte_ranges(records, total, workers):
    if not isinstance(records, tuple):
        return _tasks(records, total, workers)
    path, low, size = records
    data = Path(path).read_bytes()
    out, step = [], 50_000  # bytes: about 20 records per range
    while low < size:
        high = data.find(b"\n", min(low + step, size) - 1)
        high = size if high < 0 else high + 1
        out.append((low, high))
        low = high
    return out


def test_a_sound_bundle_in_one_process_and_in_runs(sample, small_runs, tmp_path, monkeypatch):
    lines, public_key = sample
    reports = _reports(lines, public_key, tmp_path, monkeypatch)
    assert all(r == reports[0] for r in reports)
    assert reports[0]["ok"] and reports[0]["recordsChecked"] == 1500 and reports[0]["rootsChecked"] == 5


@pytest.mark.parametrize("kind", ["edit", "header", "delete", "swap", "cut"])
def test_every_damage_is_named_alike(sample, small_runs, tmp_path, monkeypatch, kind):
    lines, public_key = sample
    rng = random.Random(kind)
    for at in [1, 36, 37, 38, 333, 334, 1024, *rng.sample(range(2, len(lines) - 2), 3)]:
        reports = _reports(_damaged(lines, kind, at), public_key, tmp_path, monkeypatch)
        assert not reports[0]["ok"], (kind, at)
        assert all(r["breaks"] == reports[0]["breaks"] for r in reports), (kind, at, reports)


def test_a_file_read_in_blocks_gives_its_lines_whatever_the_block(sample):
    import io

    lines, _ = sample
    data = b"\n".join(lines[:50]) + b"\n"
    for block in (1, 7, 1000, 4096, len(data), 1 << 23):
        assert list(bundle._read_lines(io.BytesIO(data), block)) == lines[:50]
    assert list(bundle._read_lines(io.BytesIO(data[:-1]), 1000)) == lines[:50]  # no newline at the end
