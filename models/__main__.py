"""``python -m fluorofpga.models`` / ``torchrun -m fluorofpga.models``: float training."""

from .train import main

main()
