"""The README and docs/ as a reader meets them: every relative link (and its #anchor) resolves, the README is a
page a practitioner reads in ten minutes (at most 300 lines, with a table of contents), and the committed results
name what was run in terms a reader can reuse, never the measuring machine's absolute paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    found = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, broken


def test_the_readme_is_short_and_has_a_table_of_contents():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ") and line != "## Contents"]
    assert all(f"(#{re.sub(r'[^a-z0-9 -]', '', h.lower()).replace(' ', '-')})" in contents for h in headings)


def test_committed_results_hold_no_absolute_paths_of_the_measuring_machine():
    machine = re.compile(r"\"(/work|/tmp|/root|/home|/Users)/")
    found = [str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.json") if machine.search(p.read_text())]
    assert not found, found
    for p in (REPO / "docs").rglob("*.json"):
        json.loads(p.read_text())  # and every one parses
