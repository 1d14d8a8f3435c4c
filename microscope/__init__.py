"""fluorofpga.microscope (API documented here as it grows)."""
