"""JSON as Go's encoding/json writes and rejects it, since CNI plugins and libcni are Go programs.

* `marshal_indent` is `json.MarshalIndent(v, "", "    ")` (how plugins print results and errors),
  `marshal` is `json.Marshal` (compact); both escape `<`, `>`, `&`, U+2028 and U+2029 as Go does.
* `syntax_error` is the message of Go's scanner for invalid input ("invalid character 'b' looking
  for beginning of object key string", "unexpected end of JSON input", ...).
* `field_type_error` is the "json: cannot unmarshal X into Go struct field S.f of type T" message
  for a value of the wrong JSON type.
"""

from __future__ import annotations

import json
from typing import Any

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_escape(text: str) -> str:
    for ch, esc in _GO_ESCAPES.items():
        text = text.replace(ch, esc)
    return text


def marshal_indent(obj: Any) -> str:
    """`json.MarshalIndent(obj, "", "    ")` with no trailing newline."""
    return _go_escape(json.dumps(obj, indent=4, ensure_ascii=False, separators=(",", ": ")))


def marshal(obj: Any, *, sort_keys: bool = False) -> str:
    """`json.Marshal(obj)`: compact; `sort_keys` as Go marshals a map[string]interface{}."""
    return _go_escape(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys))


# --- decoding -------------------------------------------------------------------------------------
def _quote_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    esc = json.dumps(c)[1:-1] if c not in "\a\b\f\n\r\t\v" else {
        "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[c]
    if len(esc) == 6 and esc.startswith("\\u"):
        esc = "\\x" + esc[4:] if int(esc[2:], 16) < 0x80 else esc
    return f"'{esc}'"


class _Scan(Exception):
    pass


def syntax_error(text: str) -> str | None:
    """The error Go's `json.Unmarshal` gives for a syntactically invalid document, else None."""
    s = text
    n = len(s)
    i = 0
    ws = " \t\r\n"

    def bad(c: str, ctx: str) -> _Scan:
        return _Scan(f"invalid character {_quote_char(c)} {ctx}")

    def eof() -> _Scan:
        return _Scan("unexpected end of JSON input")

    def skip() -> None:
        nonlocal i
        while i < n and s[i] in ws:
            i += 1

    def value(ctx: str = "looking for beginning of value") -> None:
        nonlocal i
        skip()
        if i >= n:
            raise eof()
        c = s[i]
        if c == "{":
            i += 1
            skip()
            if i >= n:
                raise eof()
            if s[i] == "}":
                i += 1
                return
            while True:
                skip()
                if i >= n:
                    raise eof()
                if s[i] != '"':
                    raise bad(s[i], "looking for beginning of object key string")
                string()
                skip()
                if i >= n:
                    raise eof()
                if s[i] != ":":
                    raise bad(s[i], "after object key")
                i += 1
                value()
                skip()
                if i >= n:
                    raise eof()
                if s[i] == ",":
                    i += 1
                    continue
                if s[i] == "}":
                    i += 1
                    return
                raise bad(s[i], "after object key:value pair")
        if c == "[":
            i += 1
            skip()
            if i >= n:
                raise eof()
            if s[i] == "]":
                i += 1
                return
            while True:
                value()
                skip()
                if i >= n:
                    raise eof()
                if s[i] == ",":
                    i += 1
                    continue
                if s[i] == "]":
                    i += 1
                    return
                raise bad(s[i], "after array element")
        if c == '"':
            string()
            return
        if c == "-" or c.isdigit():
            number()
            return
        for word in ("true", "false", "null"):
            if c == word[0]:
                for k, want in enumerate(word[1:], 1):
                    if i + k >= n:
                        raise eof()
                    if s[i + k] != want:
                        raise bad(s[i + k], f"in literal {word} (expecting {_quote_char(want)})")
                i += len(word)
                return
        raise bad(c, ctx)

    def string() -> None:
        nonlocal i
        i += 1
        while True:
            if i >= n:
                raise eof()
            c = s[i]
            if c == '"':
                i += 1
                return
            if c == "\\":
                i += 1
                if i >= n:
                    raise eof()
                e = s[i]
                if e in '"\\/bfnrt':
                    i += 1
                    continue
                if e == "u":
                    i += 1
                    for _ in range(4):
                        if i >= n:
                            raise eof()
                        if s[i] not in "0123456789abcdefABCDEF":
                            raise bad(s[i], "in \\u hexadecimal character escape")
                        i += 1
                    continue
                raise bad(e, "in string escape code")
            if ord(c) < 0x20:
                raise bad(c, "in string literal")
            i += 1

    def number() -> None:
        nonlocal i
        if s[i] == "-":
            i += 1
            if i >= n:
                raise eof()
            if not s[i].isdigit():
                raise bad(s[i], "in numeric literal")
        if s[i] == "0":
            i += 1
        else:
            while i < n and s[i].isdigit():
                i += 1
        if i < n and s[i] == ".":
            i += 1
            if i >= n:
                raise eof()
            if not s[i].isdigit():
                raise bad(s[i], "after decimal point in numeric literal")
            while i < n and s[i].isdigit():
                i += 1
        if i < n and s[i] in "eE":
            i += 1
            if i < n and s[i] in "+-":
                i += 1
            if i >= n:
                raise eof()
            if not s[i].isdigit():
                raise bad(s[i], "in exponent of numeric literal")
            while i < n and s[i].isdigit():
                i += 1

    try:
        value()
        skip()
        if i < n:
            raise bad(s[i], "after top-level value")
    except _Scan as exc:
        return str(exc)
    return None


def unmarshal(data: bytes | str) -> Any:
    """Parses like `json.Unmarshal` into an `interface{}`; raises ValueError with Go's message."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, (bytes, bytearray)) else data
    err = syntax_error(text)
    if err is not None:
        raise ValueError(err)
    return json.loads(text)


def json_kind(v: Any) -> str:
    """The word Go's UnmarshalTypeError uses for a JSON value."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def field_type_error(struct: str, field: str, value: Any, gotype: str) -> str:
    kind = json_kind(value)
    if kind == "number" and gotype in ("int", "uint"):
        kind = f"number {json.dumps(value)}"
    return f"json: cannot unmarshal {kind} into Go struct field {struct}.{field} of type {gotype}"


_GO_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "[]string": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "map": lambda v: isinstance(v, dict),
    "slice": lambda v: isinstance(v, list),
}


def check_fields(obj: dict[str, Any], fields: dict[str, str], struct: str) -> str | None:
    """The first Go type error decoding `obj` into a struct whose JSON fields have these Go types.

    Go's decoder matches keys case-insensitively and lets `null` leave a field alone; a float
    into an int field is an error too."""
    lowered = {k.lower(): (k, t) for k, t in fields.items()}
    for key, value in obj.items():
        hit = lowered.get(key.lower())
        if hit is None or value is None:
            continue
        name, gotype = hit
        if gotype == "int" and isinstance(value, float) and not value.is_integer():
            return field_type_error(struct, name, value, gotype)
        if gotype == "int" and isinstance(value, float):
            continue
        if gotype.startswith("struct:"):  # a named struct type: any JSON object decodes into it
            if not isinstance(value, dict):
                return field_type_error(struct, name, value, gotype[len("struct:"):])
            continue
        check = _GO_CHECKS.get(gotype, lambda v: True)
        if not check(value):
            shown = {"map": "map[string]interface {}", "slice": "[]interface {}"}.get(gotype, gotype)
            return field_type_error(struct, name, value, shown)
    return None


def get(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    """A field as Go's decoder finds it: exact key first, then a case-insensitive match."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return v
    return default


def quote(text: str) -> str:
    """Go's `%q` of a string (strconv.Quote), close enough for the printable text CNI deals in."""
    return json.dumps(text, ensure_ascii=False)


def quote_list(items: list[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(quote(s) for s in items) + "]"
