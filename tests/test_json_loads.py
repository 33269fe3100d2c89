"""jsonb values as read (`app.db.json_loads`): exactly what the standard library reads, big integers included."""

from __future__ import annotations

import json

from app.db import json_loads


def test_json_loads_reads_exactly_as_the_standard_library():
    texts = [
        '{"n": 18446744073709551617, "m": -18446744073709551617, "k": [1, 2.5, null, true]}',
        '{"id": "abc1234567890123456789", "x": 1e400}',  # digits inside a string; a float beyond range
        "[9223372036854775807, 9223372036854775808, 0.1]",
        '{"nan": NaN}',  # the standard library reads it, orjson refuses: the fallback takes it
    ]
    for text in texts:
        for value in (text, text.encode()):
            got, expected = json_loads(value), json.loads(value)
            assert repr(got) == repr(expected), text  # repr: NaN != NaN, and 1 == 1.0 must not pass
    assert json_loads('{"n": 18446744073709551617}')["n"] == 2**64 + 1
