"""Where benchmark scripts put their numbers: ``benchmarks/results/NAME.{json,md}``."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, results: dict, table: str) -> None:
    """Write ``NAME.json`` (all numbers) and ``NAME.md`` (the readable table); print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
