"""Go's text/tabwriter, which kubectl prints through: tab-terminated cells aligned in column blocks.

`kubectl get` uses minwidth 6, padding 3 (printers.GetNewTabWriter); `kubectl describe` uses
minwidth 0, padding 2 (describe.tabbedString). A column block is a run of consecutive lines
that have a tab-terminated cell in that column; the text after a line's last tab is not part of
any column. `flush()` ends every block, as Writer.Flush does.
"""

from __future__ import annotations


class TabWriter:
    """Accumulates text with `write`; `getvalue` flushes and returns everything written so far."""

    def __init__(self, minwidth: int, padding: int) -> None:
        self.minwidth, self.padding = minwidth, padding
        self._pending: list[str] = []
        self._out: list[str] = []

    def write(self, text: str) -> None:
        self._pending.append(text)

    def flush(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        if not text:
            return
        lines = [ln.split("\t") for ln in text.split("\n")]
        self._format(lines, [], 0, len(lines))

    def getvalue(self) -> str:
        self.flush()
        return "".join(self._out)

    def _format(self, lines: list[list[str]], widths: list[int], line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            self._write_lines(lines, widths, line0, this)
            line0 = this
            width = self.minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + self.padding)
                this += 1
            widths.append(width)
            self._format(lines, widths, line0, this)
            widths.pop()
            line0 = this
        self._write_lines(lines, widths, line0, line1)

    def _write_lines(self, lines: list[list[str]], widths: list[int], line0: int, line1: int) -> None:
        out = self._out
        last = len(lines) - 1
        for i in range(line0, line1):
            for j, cell in enumerate(lines[i]):
                out.append(cell)
                if j < len(widths) and j < len(lines[i]) - 1:
                    out.append(" " * (widths[j] - len(cell)))
            if i != last:
                out.append("\n")


def tabulate(rows: list[list[str]], *, minwidth: int = 6, padding: int = 3) -> str:
    """Rows of cells joined by tabs, one line each, through a TabWriter (kubectl get's table)."""
    w = TabWriter(minwidth, padding)
    for row in rows:
        w.write("\t".join(row) + "\n")
    return w.getvalue()
