"""Compiles the data-plane tables; everything else lives in pyproject.toml."""
import os

from setuptools import Extension, setup

ext = [] if os.environ.get("EMU_NO_EXTENSIONS") == "1" else [Extension("emu._fastpath", ["emu/_fastpath.pyx"])]
if ext:
    from Cython.Build import cythonize

    ext = cythonize(ext, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})
setup(ext_modules=ext)
