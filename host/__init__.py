"""fluorofpga.host (API documented here as it grows)."""
