"""Helpers shared by our cocotb testbenches (imported inside the simulator only).

No ``@cocotb.test`` here: importing this module registers no test.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def load_job(env: str, runner: str) -> dict[str, Any]:
    """The JSON job named by the environment variable ``env`` (set by ``runner``)."""
    path = os.environ.get(env)
    if not path:
        raise RuntimeError(f"{env} is unset: run this module through {runner}")
    return json.loads(Path(path).read_text())


def random_bools(p: float, rng: random.Random) -> Iterator[bool]:
    """An endless stream of ``True`` with probability ``p`` (pause / idle patterns)."""
    while True:
        yield rng.random() < p
