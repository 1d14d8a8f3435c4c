"""fluorofpga: deep-learning image restoration inside a fluorescence microscope.

Rooms (subpackages), data flows one way::

    microscope -> models -> quantize -> hw -> host

``fluorofpga.app`` is the facade the CLI, notebooks and tests use.
"""

__version__ = "0.1.0"
