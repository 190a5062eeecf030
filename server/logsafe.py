"""Values from outside (names, addresses, reasons) made safe to write into a log line."""

from __future__ import annotations

_MAX = 300


def printable(value: object, limit: int = _MAX) -> str:
    """`value` as text on one line: control, format and unassigned characters (newline, carriage
    return, escape, bidi overrides...) written as `\\n`, `\\r`, `\\t` or `\\uXXXX`, and cut at `limit`
    characters, so a name cannot forge or hide a log line."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return "".join(out)
