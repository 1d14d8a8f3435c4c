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


class JobBench:
    """Mixin of the kernel testbenches: ``self.job`` (the JSON job, with a
    ``measurements`` file path) and ``self.seed`` are set by the bench."""

    job: dict[str, Any]
    seed: int

    def rng(self, name: str) -> Any:
        """A numpy generator seeded by the job's seed and ``name`` (a test's name)."""
        import numpy as np

        return np.random.default_rng([self.seed, *name.encode()])

    def measure(self, test: str, values: dict[str, Any]) -> None:
        """Record measurements of a test in the job's measurements file."""
        path = Path(self.job["measurements"])
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[test] = values
        path.write_text(json.dumps(data, indent=1))
