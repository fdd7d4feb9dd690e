"""Every ``spec X.Y`` and ``Qn`` a comment or document cites exists in docs/spec."""

from __future__ import annotations

import re

from helpers import TOP

SPEC = (TOP / "docs" / "spec" / "VMGAHP-PROTOCOL.md").read_text()
SECTIONS = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", SPEC, re.M)) | set(
    re.findall(r"^### (\d+\.\d+), \d+\.\d+", SPEC, re.M))
QUIRKS = set(re.findall(r"\*\*Q(\d+)\.", SPEC))
CITE = re.compile(r"\bspec(?: sections?)? (\d+(?:\.\d+)?)|\bQ(\d{1,2})\b")


def _cited() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    files = [*TOP.glob("src/vmgahp/**/*.py"), *TOP.glob("docs/*.md"), *TOP.glob("tests/*.py")]
    for path in files:
        for section, quirk in CITE.findall(path.read_text()):
            found.setdefault(section and f"spec {section}" or f"Q{quirk}", set()).add(path.name)
    return found


def test_every_citation_resolves() -> None:
    # Headings like "### 3.6 `CONDOR_VM_SUSPEND`, 3.7 ..., 3.9 ..." name several sections.
    grouped = set(re.findall(r"(\d+\.\d+) `CONDOR_VM_", SPEC))
    known = SECTIONS | grouped | {s.split(".")[0] for s in SECTIONS}
    missing = {cite: sorted(where) for cite, where in _cited().items()
               if (cite.startswith("spec ") and cite[5:] not in known)
               or (cite.startswith("Q") and cite[1:] not in QUIRKS)}
    assert not missing, missing
    assert len(_cited()) > 20  # the test sees the citations at all
