"""fluorofpga.models (API documented here as it grows)."""
