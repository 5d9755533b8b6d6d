"""Rewrite the README's generated sections from the code: the device fields (between
``<!-- device-fields -->`` and ``<!-- /device-fields -->``), from the device models.

Run from the repository root: ``python tools/readme_sections.py``; ``--check`` exits 1 when the
README is out of date (the test suite checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from clustersim.sim.resources import fields_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- device-fields -->", "<!-- /device-fields -->"


def generated(text: str) -> str:
    """``text`` (the README) with its device-fields section regenerated."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{fields_markdown()}{END}{tail}"


def main(argv: list[str]) -> int:
    """Rewrite the README (or, with ``--check``, return 1 if it is out of date)."""
    text = README.read_text()
    new = generated(text)
    if "--check" in argv:
        return int(new != text)
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
