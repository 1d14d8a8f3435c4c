"""fluorofpga.hw (API documented here as it grows)."""
