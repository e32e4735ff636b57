"""The definitions page ``docs/definitions.md`` is the one place the metrics are defined.

* No text file of the repository points to the old, out-of-repository definitions file.
* Every ``docs/definitions.md#<anchor>`` written in the package, the notebooks, the README or the
  docs names a heading of ``docs/definitions.md`` (GitHub anchors), and the page's own ``(#anchor)``
  links resolve.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "docs" / "definitions.md"
# built in two parts so that this file does not match itself
OLD_NAME = "SCIENCE" + ".md"
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".json"}
SKIP_DIRS = {".git", ".venv", "runs", "build", "dist", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
REF = re.compile(r"docs/definitions\.md#([\w-]+)")


def _repo_text_files() -> list[Path]:
    """Tracked files plus new, not ignored ones (git); every file outside build folders otherwise."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
        ).stdout
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted({p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file()})


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = heading.strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def heading_anchors(markdown: str) -> list[str]:
    """Anchors of every ATX heading outside fenced code blocks (repeats get GitHub's ``-1``, ``-2``)."""
    anchors, seen, fenced = [], {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_anchor(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.append(base if n == 0 else f"{base}-{n}")
    return anchors


def test_github_anchor_rules():
    assert github_anchor("Instance matching") == "instance-matching"
    assert github_anchor("PCA, t-SNE and clustering") == "pca-t-sne-and-clustering"
    assert github_anchor("Clearing quality along depth (3D)") == "clearing-quality-along-depth-3d"
    assert heading_anchors("# A\n```\n# not a heading\n```\n## A\n") == ["a", "a-1"]


def test_no_reference_to_the_old_definitions_file():
    files = _repo_text_files()
    assert any(p.suffix == ".py" for p in files) and any(p.suffix == ".ipynb" for p in files)
    offenders = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            if OLD_NAME in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not offenders, (
        f"{OLD_NAME} is not part of the repository; point to docs/definitions.md#<section> instead:\n"
        + "\n".join(offenders)
    )


def _referencing_files() -> list[Path]:
    files = [p for p in (ROOT / "opsef_core").rglob("*.py")]
    files += [p for p in (ROOT / "notebooks").iterdir() if p.suffix in (".py", ".ipynb")]
    files += [ROOT / "README.md"] + [p for p in (ROOT / "docs").glob("*.md") if p != DEFINITIONS]
    return sorted(p for p in files if p.is_file())


def test_definitions_page_has_one_heading_per_topic():
    assert DEFINITIONS.is_file(), "docs/definitions.md is missing"
    anchors = heading_anchors(DEFINITIONS.read_text(encoding="utf-8"))
    topics = [
        "instance-matching", "aggregated-jaccard-index", "pixel-metrics", "single-spheroid-metrics",
        "spheroid-readouts", "clearing-quality-along-depth", "fucci-phase-calls", "channel-fusion",
        "region-properties", "exploratory-analysis", "opsef-conventions",
    ]
    missing = [t for t in topics if t not in anchors]
    assert not missing, f"docs/definitions.md lost the section(s) {missing}; headings: {anchors}"
    assert len(anchors) == len(set(anchors)), "docs/definitions.md repeats a heading"


def test_every_definitions_anchor_exists():
    anchors = set(heading_anchors(DEFINITIONS.read_text(encoding="utf-8")))
    refs, broken = 0, []
    for path in _referencing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            for anchor in REF.findall(line):
                refs += 1
                if anchor not in anchors:
                    broken.append(f"{path.relative_to(ROOT)}:{i}: #{anchor}")
    assert refs >= 10, f"expected the docstrings and notebooks to point to sections, found {refs} reference(s)"
    assert not broken, (
        "references to sections that docs/definitions.md does not have (headings: "
        f"{sorted(anchors)}):\n" + "\n".join(broken)
    )


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_docs_link_the_definitions_page(doc):
    assert "docs/definitions.md" in (ROOT / doc).read_text(encoding="utf-8")


def test_definitions_page_internal_links_resolve():
    text = DEFINITIONS.read_text(encoding="utf-8")
    anchors = set(heading_anchors(text))
    links = re.findall(r"\]\(#([^)\s]+)\)", text)
    assert links, "expected cross-references between sections"
    assert not [a for a in links if a not in anchors], [a for a in links if a not in anchors]
