"""MkDocs hook: a guide page takes its text from README.md's sections, so the two never drift apart.

A line ``<!-- readme: Data -->`` in a page is replaced by the body of README's ``## Data`` section (up to the next
``## `` heading), with README's links into ``docs/`` rewritten relative to the page. A named section that README
does not have fails the build. ``<!-- readme: - -->`` takes README's opening, before its first ``## `` heading.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

DIRECTIVE = re.compile(r"^<!-- readme: (?P<name>.+?) -->$", re.MULTILINE)
OPENING = "-"


def sections(readme: str) -> dict[str, str]:
    """README's ``## `` sections by title (``-``: the text before the first one, without the ``# `` title line);
    a ``## `` line inside a code fence is text; a title used twice is an error."""
    found: dict[str, list[str]] = {OPENING: []}
    current, fenced = OPENING, False
    for line in readme.split("\n"):
        fenced ^= line.lstrip().startswith(("```", "~~~"))
        if not fenced and line.startswith("## "):
            current = line[3:].strip()
            if current in found:
                raise ValueError(f"README.md: two sections are titled '## {current}'")
            found[current] = []
        elif not (current == OPENING and not found[OPENING] and line.startswith("# ")):
            found[current].append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def included(markdown: str, readme: str, page_path: str) -> str:
    """``markdown`` with every directive replaced by its README section; ``page_path`` is the page's path in
    ``docs/`` (for relative links)."""
    found = sections(readme)
    base = posixpath.dirname(page_path)

    def section(match: re.Match) -> str:
        name = match.group("name")
        if name not in found:
            raise ValueError(f"{page_path}: README.md has no section '## {name}'")
        return re.sub(r"\]\(docs/([^)]+)\)", lambda link: f"]({posixpath.relpath(link.group(1), base or '.')})",
                      found[name])

    return DIRECTIVE.sub(section, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs's hook signature
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text(encoding="utf-8")
    return included(markdown, readme, page.file.src_uri)
