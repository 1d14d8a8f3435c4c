"""fluorofpga.quantize (API documented here as it grows)."""
