"""The documentation site: ``mkdocs build --strict`` (what ``make docs`` runs in CI) builds the guides from
README's sections and the API reference from the docstrings, with every module of the package on a page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
from readme_sections import included, sections  # noqa: E402


def test_every_module_of_the_package_is_on_a_reference_page() -> None:
    """Each ``::: module`` entry renders that module and, unless it says ``show_submodules: false``, those below."""
    entries = [entry for page in (ROOT / "docs" / "reference").glob("*.md")
               for entry in page.read_text().split("::: ")[1:]]
    named = {entry.partition("\n")[0].strip(): "show_submodules: false" not in entry for entry in entries}
    package = ROOT / "src" / "cxrlens"
    modules = {".".join(("cxrlens", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               for path in package.rglob("*.py")}
    public = {name for name in modules if not any(part.startswith("_") for part in name.split("."))}
    missing = [name for name in public if name not in named
               and not any(name.startswith(f"{entry}.") and deep for entry, deep in named.items())]
    assert not missing


def test_guide_pages_take_readme_sections_with_links_relative_to_the_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "Predict, serve, export" in sections(readme) and sections(readme)["-"].lstrip().startswith("```bash")
    page = "guide/cams.md"
    text = included("# CAMs\n<!-- readme: Results you can trust -->\n", readme, page)
    assert "<!-- readme" not in text and "raw-pixel" in text
    for link in re.findall(r"\]\((?!https?:)([^)#]+)", included("<!-- readme: - -->", readme, page)):
        assert (ROOT / "docs" / "guide" / link).resolve().exists(), link
    with pytest.raises(ValueError, match="README.md has no section '## Nowhere'"):
        included("<!-- readme: Nowhere -->", readme, page)
    fenced = sections("# T\nopening\n## A\n```\n## not a title\n```\n## B\nb\n")
    assert list(fenced) == ["-", "A", "B"] and "## not a title" in fenced["A"] and fenced["-"] == "opening"
    with pytest.raises(ValueError, match="two sections are titled '## A'"):
        sections("## A\n## A\n")


def test_docstrings_become_markdown_lists_and_links() -> None:
    from docstring_markdown import blank_before_lists

    assert blank_before_lists("Text:\n- one\n  more\n- two\n\nAfter") == "Text:\n\n- one\n  more\n- two\n\nAfter"
    assert blank_before_lists("```\ncode\n- not a list\n```") == "```\ncode\n- not a list\n```"
    assert blank_before_lists("papers 000 and\n002. More text") == "papers 000 and\n002. More text"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the [docs] extra is not installed")
def test_the_site_builds_strict_with_guides_and_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-3000:]
    serving = (site / "guide" / "serving" / "index.html").read_text()
    assert "DICOM out" in serving and "Secondary Capture" in serving  # README's section, included
    for page in site.rglob("index.html"):  # a list glued to the text before it renders as a paragraph of dashes
        paragraphs = re.findall(r"<p>(.*?)</p>", page.read_text(), flags=re.DOTALL)
        assert not [text for text in paragraphs if re.search(r"^(- |1\. )", text, flags=re.MULTILINE)], page
    reference = (site / "reference" / "infer" / "index.html").read_text()
    assert 'id="cxrlens.infer.dicom_out.write_dicom_out"' in reference
    # Sphinx roles of the docstrings became links (to cxrlens objects) or code, never raw ':func:' text
    assert 'href="../data/#cxrlens.data.io.CXRImageError"' in reference
    assert not re.search(r":(func|class|mod|meth|attr):", "".join(
        page.read_text() for page in (site / "reference").rglob("index.html")))
