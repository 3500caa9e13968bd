"""The manual builds, links and names only what exists (issue 26, item 3).

``mkdocs build --strict`` with mkdocs.yml's ``validation`` set to warn turns a broken link or
anchor, and a page left out of the nav, into a failure. What MkDocs does not see is checked
here: README.md's links (it lies outside ``docs/``), the files the pages name in code spans
(a moved module fails here until its page follows), every benchmark on the benchmarks page,
and the code citing the design document where a clone has it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A repository file named in a code span: a folder of the repository, then a name with a suffix.
FOLDERS = "pipelines|curation|model|training|reward|infra|scripts|benchmarks|tests|constraints|docs"
FILE = re.compile(rf"(?<![\w./~-])(?:{FOLDERS})/[\w./*-]*\.(?:py|yaml|yml|json|sh|txt|toml|md|png)\b")


def _prose(text: str) -> str:
    """``text`` without its fenced blocks (commands and examples, not citations)."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_the_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, not about us
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    built = {p.relative_to(tmp_path / "site").parts[0] for p in (tmp_path / "site").rglob("index.html")}
    assert {p.stem for p in PAGES[1:] if p.stem != "index"} <= built


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the manual"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_every_file_the_manual_names_exists():
    named = {(page.name, path) for page in PAGES
             for span in re.findall(r"`([^`]+)`", _prose(page.read_text())) for path in FILE.findall(span)}
    assert len(named) > 20  # the pattern finds the manual's citations
    missing = sorted((page, path) for page, path in named
                     if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()))
    assert missing == [], f"files the manual names that the repository does not have: {missing}"


def test_the_benchmarks_page_lists_every_benchmark():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    scripts = [p for p in sorted((ROOT / "benchmarks").glob("*.py")) if f"benchmarks/{p.name}" not in page]
    assert scripts == []


def test_the_code_cites_the_design_document_in_the_repository():
    """A clone has docs/design.md, not the brief it grew from (outside the repository)."""
    stale = [str(p.relative_to(ROOT)) for folder in ("pipelines", "curation", "model", "training", "reward",
                                                      "benchmarks", "scripts", "tests")
             for p in (ROOT / folder).rglob("*.py") if re.search(r"\bDESIGN\.md", p.read_text())]
    assert stale == []
    assert (ROOT / "docs" / "design.md").exists()
