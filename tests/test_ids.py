"""Ids: prefixed ULIDs, time-ordered, strictly increasing within the process (the order rows were made)."""

from __future__ import annotations

import re
import time

from app.db import new_id


def test_ids_are_ulids_in_the_order_they_were_made():
    before = time.time_ns() // 1_000_000
    ids = [new_id("log") for _ in range(20_000)]  # many within one millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"log_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids[:100])
    crockford = "0123456789abcdefghjkmnpqrstvwxyz"
    millis = 0
    for char in ids[0][4:14]:  # the first ten digits: 48 bits of milliseconds (and two leading zeros)
        millis = millis * 32 + crockford.index(char)
    assert before <= millis <= time.time_ns() // 1_000_000
