"""Fixtures for the data-plane table tests: the compiled module and its pure-Python twin."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from emu import _fastpath_py


def load_compiled() -> ModuleType:
    """The compiled tables; a test fails when they did not build, unless EMU_NO_EXTENSIONS=1 says so."""
    try:
        return importlib.import_module("emu._fastpath")
    except ImportError as exc:
        if os.environ.get("EMU_NO_EXTENSIONS") == "1":
            pytest.skip(f"emu._fastpath not built and EMU_NO_EXTENSIONS=1 ({exc})")
        pytest.fail(f"compiled emu._fastpath failed to import ({exc}); build it or set EMU_NO_EXTENSIONS=1")


@pytest.fixture(scope="module", params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The module under test: compiled or pure-Python."""
    return load_compiled() if request.param == "c" else _fastpath_py


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    """(compiled, twin) for lockstep comparisons."""
    return load_compiled(), _fastpath_py
