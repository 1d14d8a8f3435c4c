"""fluorofpga.boards (API documented here as it grows)."""
