"""Griffe extension for the API reference: cxrlens's docstrings, written for reading in the source, made Markdown.

* Sphinx roles (``:func:`name```, ``:class:`name```, ...) become links where the name resolves, from the
  documented object's scope, to a public object of cxrlens (which the reference renders), and inline code
  otherwise (torch, numpy, private names).
* A list that starts right under a line of text gets the blank line Markdown needs to see a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc):`(?P<body>[^`]+)`")
TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^>]+)>$")
LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+] |1[.)] )")  # a wrapped line starting "002. " opens no list
FENCE = re.compile(r"^\s*(```|~~~)")


class DocstringMarkdown(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        for obj in _documented(pkg):
            text = ROLE.sub(lambda match: _link(obj, pkg, match.group("body")), obj.docstring.value)
            obj.docstring.value = blank_before_lists(text)


def blank_before_lists(text: str) -> str:
    """``text`` with a blank line before each list (a bullet, or an item numbered 1) that starts right under a
    paragraph's text, outside code fences; a paragraph that already holds a list item is a list whose items
    continue."""
    lines: list[str] = []
    fenced = listed = False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and LIST_ITEM.match(line):
            if lines and lines[-1].strip() and not listed:
                lines.append("")
            listed = True
        elif not line.strip():
            listed = False
        lines.append(line)
    return "\n".join(lines)


def _documented(obj: griffe.Object) -> Iterator[griffe.Object]:
    if obj.docstring is not None:
        yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _documented(member)


def _link(obj: griffe.Object, pkg: griffe.Module, body: str) -> str:
    """A role's body (``name``, ``~a.b.name`` shown as ``name``, ``title <name>``) as a link or as code."""
    titled = TITLED.match(body)
    name = (titled.group("target") if titled else body).removeprefix("~")
    shown = titled.group("title") if titled else name.rsplit(".", 1)[-1] if body.startswith("~") else name
    target = _target(obj, pkg, name.removesuffix("()"))
    return f"[`{shown}`][{target}]" if target else f"`{shown}`"


def _target(obj: griffe.Object, pkg: griffe.Module, name: str) -> str | None:
    """The canonical path of ``name`` when it is a public object of the package, else None."""
    candidates = [name] if name.startswith(f"{pkg.name}.") else []
    for scope in (obj, obj.parent, obj.module):
        if scope is None:
            continue
        try:
            candidates.append(scope.resolve(name))
        except (griffe.NameResolutionError, AttributeError):
            continue
    for path in candidates:
        try:
            found = pkg[path.removeprefix(f"{pkg.name}.")] if path != pkg.name else pkg
            canonical = found.canonical_path
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if canonical.startswith(f"{pkg.name}.") and not any(part.startswith("_") for part in canonical.split(".")):
            return canonical
    return None
