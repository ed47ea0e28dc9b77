"""Selects the data-plane tables: the compiled `emu._fastpath` or its pure-Python twin.

`EMU_NO_EXTENSIONS=1` asks for the twin; a missing extension falls back to it with a warning,
and `EXTENSION_LOADED` tells which one a normal import got (a test fails when it is False).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from emu import _fastpath_py

EXTENSION_REQUESTED = os.environ.get("EMU_NO_EXTENSIONS") != "1"
_compiled: ModuleType | None = None
if EXTENSION_REQUESTED:
    try:
        from emu import _fastpath as _compiled  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the install
        warnings.warn(
            f"emu: compiled data plane not available ({exc}); using the pure-Python tables", stacklevel=2
        )

EXTENSION_LOADED = _compiled is not None


def load(pure: bool | None = None) -> ModuleType:
    """The table module: the twin when `pure` is true (or the extension is off), else the compiled one."""
    if pure or _compiled is None:
        return _fastpath_py
    return _compiled


def name(module: ModuleType) -> str:
    return "cython" if module is _compiled and module is not None else "python"
