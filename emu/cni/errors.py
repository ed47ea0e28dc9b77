"""CNI errors: the spec's codes and the JSON a plugin (or the runtime) reports them in.

A plugin that fails prints `{"code", "msg", "details"}` on stdout and exits 1 (the real plugins,
built on libcni's skel, print no `cniVersion`); the runtime's own errors carry the spec 1.1 shape
`{"cniVersion", "code", "msg", "details"}`. Any error that is not one of the spec's is wrapped by
skel as code 999 (`ErrInternal`), which is what host-local's "no IP addresses available" comes out as.
"""

from __future__ import annotations

INCOMPATIBLE_CNI_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT_VARIABLES = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999  # skel's ErrInternal: a plugin error that is not a *types.Error

CODE_NAMES = {
    INCOMPATIBLE_CNI_VERSION: "incompatible CNI version",
    UNSUPPORTED_FIELD: "unsupported field in network configuration",
    UNKNOWN_CONTAINER: "container unknown or does not exist",
    INVALID_ENVIRONMENT_VARIABLES: "invalid necessary environment variables",
    IO_FAILURE: "I/O failure",
    DECODING_FAILURE: "failed to decode content",
    INVALID_NETWORK_CONFIG: "invalid network config",
    TRY_AGAIN_LATER: "try again later",
    PLUGIN_NOT_AVAILABLE: "plugin not available",
    LIMITED_CONNECTIVITY: "limited connectivity",
    INTERNAL: "plugin-specific error",
}


class CniError(Exception):
    """A CNI error: `code` (the spec's), `msg`, `details`; `context` says where the runtime met it."""

    def __init__(self, code: int, msg: str, details: str = "", *, cni_version: str = "1.1.0",
                 context: str = "") -> None:
        self.code = int(code)
        self.msg = msg
        self.details = details
        self.cni_version = cni_version
        self.context = context
        super().__init__(msg)

    def __str__(self) -> str:
        text = f"{self.msg}; {self.details}" if self.details else self.msg
        return f"{self.context}: {text}" if self.context else text

    def __repr__(self) -> str:
        return f"CniError(code={self.code}, msg={self.msg!r}, details={self.details!r})"

    def to_json(self) -> dict[str, object]:
        """The spec 1.1 error object (`details` is always present, possibly empty)."""
        return {"cniVersion": self.cni_version, "code": self.code, "msg": self.msg, "details": self.details}

    def plugin_json(self) -> dict[str, object]:
        """What a plugin built on libcni's skel prints: `details` only when set, no cniVersion."""
        out: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object], *, context: str = "") -> CniError:
        return cls(int(obj.get("code", 0) or 0), str(obj.get("msg", "")), str(obj.get("details", "") or ""),
                   cni_version=str(obj.get("cniVersion", "") or "1.1.0"), context=context)


def fail(msg: str) -> CniError:
    """A plain Go `error` returned by a plugin: skel reports it as code 999."""
    return CniError(INTERNAL, msg)
