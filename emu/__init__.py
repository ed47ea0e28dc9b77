"""emu: a packet-level emulator of Kubernetes container networking."""

__version__ = "0.1.0"
