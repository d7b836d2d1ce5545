"""Every relative link in the user-facing Markdown resolves: the file exists, and an ``#anchor`` into a Markdown
file names one of its headings (GitHub's slugs).  The README and reports/FINDINGS.md link to each other, to the
evidence index and to the lab notebook; a moved or renamed file must not leave a dead link behind."""
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "reports").glob("*.md")),
        "models/README.md", "kernels/NOTES.md"]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def links(text):
    """The link targets of a Markdown text, code blocks and inline code left out."""
    # Scanning left to right, a link (whose text may hold code) or a whole code span is taken at each point, so
    # a link written inside inline code is skipped and a code span inside link text does not hide the link.
    tokens = re.finditer(f"{LINK.pattern}|`[^`\n]*`", FENCE.sub("", text))
    return [m.group(1) for m in tokens if m.group(1)]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def dead_links(doc):
    path = REPO / doc
    dead = []
    for target in links(path.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            dead.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    return dead


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    assert (REPO / doc).is_file(), f"{doc} is missing"
    dead = dead_links(doc)
    assert not dead, f"{doc}: dead links: {dead}"


def test_the_checker_finds_dead_files_and_anchors(tmp_path, monkeypatch):
    (tmp_path / "a.md").write_text("# Title\n\n## Kernels (measured)\n\n[ok](#kernels-measured) [ok](a.md#title) "
                                   "[bad](b.md) [bad](#nope) ![img](fig.png) `[not](a link)` `x` [`code`](c.md) `y`\n"
                                   "```\n[in code](c.md)\n```\n")
    (tmp_path / "fig.png").write_bytes(b"")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert dead_links("a.md") == ["b.md (no such file)", "#nope (no heading #nope in a.md)",
                                "c.md (no such file)"]
