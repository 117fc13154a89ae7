"""Text generated into a hand-written page: the part between two marker lines.

The benchmark findings (:mod:`godiff.bench.pages`) and the zoo tutorial (:mod:`godiff.zoo.table`)
each carry a generated table between a begin and an end marker; everything else on the page is
written by hand.

Example:
    >>> between_markers("a\\n<!-- b -->\\nold\\n<!-- e -->\\nz", "<!-- b -->", "<!-- e -->", "new\\n")
    'a\\n<!-- b -->\\nnew\\n<!-- e -->\\nz'
"""

from __future__ import annotations

__all__ = ["between_markers"]


def between_markers(page: str, begin: str, end: str, text: str) -> str:
    """``page`` with what lies between the line ``begin`` and ``end`` replaced by ``text``; a page
    without both markers is a ValueError naming them (nothing is guessed)."""
    if begin not in page or end not in page:
        raise ValueError(f"the page lacks the markers {begin!r} and {end!r}")
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}{end}{tail}"
