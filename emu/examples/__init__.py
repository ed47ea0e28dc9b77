"""Bundled examples: labs built from the same command lines a reader would type on Linux."""

from emu.examples import chapter1

EXAMPLES = {"chapter1": chapter1}
