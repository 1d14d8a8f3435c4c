"""fluorofpga.boards: board definitions as data (one JSON file per board).

Public API:
    Board                 dataclass: part, clock, resources, AXI width, PYNQ image
    load_board(name)      the board called ``name`` (e.g. "kv260", "pynq-z2")
    list_boards()         names of all known boards
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Attributes:
        name: short name used on the command line.
        description: human-readable name.
        finn_board: board name as FINN knows it.
        fpga_part: Xilinx part number.
        clock_mhz: default fabric clock of the accelerator, MHz.
        resources: capacity per resource type (LUT, FF, BRAM_18K, URAM, DSP).
        axi_hp_width_bits: width of the AXI HP port used by the DMA, bits.
        dma_max_burst_bytes: largest DMA burst, bytes.
        pynq_image: PYNQ image version the board runs.
        vivado_board_part: Vivado board part of the block design's PS preset (FINN's
            ``custom_zynq_shell_template`` strings).
        ps: processing system of the block design: ``zynq_us`` (UltraScale+) or
            ``zynq_7000``.
    """

    name: str
    description: str
    finn_board: str
    fpga_part: str
    clock_mhz: float
    resources: dict[str, int] = field(default_factory=dict)
    axi_hp_width_bits: int = 64
    dma_max_burst_bytes: int = 4096
    pynq_image: str = ""
    vivado_board_part: str = ""
    ps: str = "zynq_us"

    @property
    def clock_period_ns(self) -> float:
        """Clock period in ns."""
        return 1000.0 / self.clock_mhz

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dict(self.__dict__)


def list_boards() -> list[str]:
    """Names of all boards shipped with fluorofpga."""
    files = resources.files(__package__).iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


def load_board(name: str) -> Board:
    """Load the board definition called ``name``; unknown names list the known ones."""
    path = resources.files(__package__) / f"{name.lower()}.json"
    if not path.is_file():
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(list_boards())}")
    return Board(**json.loads(path.read_text()))
