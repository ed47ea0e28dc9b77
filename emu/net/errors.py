"""Errors raised by the namespace API, carrying the text iproute2 would print."""

from __future__ import annotations


class NetError(Exception):
    """A refused configuration change: `message` is what iproute2 prints, `rc` its exit code.

    `str()` names the namespace and the operation, for Python callers and control planes.
    """

    def __init__(self, message: str, rc: int = 2, *, netns: str = "", op: str = "") -> None:
        self.message = message
        self.rc = rc
        self.netns = netns
        self.op = op
        super().__init__(message)

    def __str__(self) -> str:
        where = f"netns {self.netns}: " if self.netns else ""
        what = f"{self.op}: " if self.op else ""
        return f"{where}{what}{self.message}"


def exists() -> NetError:
    return NetError("RTNETLINK answers: File exists")


def no_such_process() -> NetError:
    return NetError("RTNETLINK answers: No such process")


def no_device(name: str) -> NetError:
    return NetError(f'Cannot find device "{name}"', rc=1)
