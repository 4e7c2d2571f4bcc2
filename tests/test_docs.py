"""The documentation's links lead somewhere, and the code points to the documentation the repository has.

- every relative link of README.md and docs/*.md (``[text](path)``, ``![alt](path)``, ``#anchor`` included) names a
  file or folder of the repository, and an anchor into a Markdown file names one of its headings (GitHub's slugs);
- no file of ``engine/`` and not README.md mentions ``DESIGN.md``, which is not part of the repository: the design
  lives in ``docs/`` (architecture.md, conventions.md, extending.md).
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _unfenced(text: str) -> str:
    """The text without fenced code blocks (their ``#`` lines are not headings)."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (their brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set:
    lines = _unfenced(page.read_text(encoding="utf-8")).splitlines()
    return {_slug(m.group(1)) for m in (re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line) for line in lines) if m}


def _links(page: Path) -> list:
    return [m.group(1) for m in LINK.finditer(_prose(page.read_text(encoding="utf-8")))]


def test_the_pages_exist():
    names = {p.name for p in PAGES[1:]}
    assert {"README.md", "architecture.md", "conventions.md", "extending.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    links = _links(page)
    assert links, f"{page}: no links found (the parser or the page is broken)"
    bad = []
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link, re.I):  # http:, https:, mailto: ...: not checked here
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            bad.append(f"{link}: no such file {target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            bad.append(f"{link}: no heading with the anchor #{anchor} in {target.name}")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_nothing_points_to_design_md():
    files = [ROOT / "README.md"] + sorted((ROOT / "engine").rglob("*.py"))
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in files
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if "DESIGN.md" in line]
    assert not hits, "DESIGN.md is not in the repository; point to docs/architecture.md, docs/conventions.md or " \
                     "docs/extending.md instead: " + ", ".join(hits)


def test_the_checks_see_links_and_anchors(tmp_path):
    """The parser finds links (not those in code), and the slug rule matches GitHub's for the headings used."""
    page = tmp_path / "p.md"
    page.write_text("# A: title, with `code`\nsee [x](other.md#y) and ![i](img.png)\n```\n[no](link.md)\n```\n")
    assert _links(page) == ["other.md#y", "img.png"]
    assert _anchors(page) == {"a-title-with-code"}
    assert _slug("Differentiable stages: forward returns a state, the VJP takes it") == \
        "differentiable-stages-forward-returns-a-state-the-vjp-takes-it"
