"""A record's differences come in the same order in every process: DeepDiff's report sets follow
string hashes, which change with PYTHONHASHSEED from one process to the next."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from shadowproxy.engine.diff import compare_responses
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.options import CompareOptions
h = (("content-type", "application/json"),)
live = Response(200, h, b'{"id": 7, "name": "Ada", "role": "x", "tags": [1]}')
shadow = Response(200, h, b'{"id": 7, "full_name": "Ada", "title": "y", "tags": [1]}')
print([(d.path, d.kind) for d in compare_responses(live, shadow, CompareOptions()).differences])
"""


def test_keys_on_one_side_only_are_listed_in_the_same_order_whatever_the_hash_seed() -> None:
    outputs = {
        subprocess.run([sys.executable, "-c", SCRIPT], env={"PYTHONHASHSEED": str(seed)},
                       capture_output=True, text=True, check=True).stdout
        for seed in range(6)
    }
    assert len(outputs) == 1, outputs
