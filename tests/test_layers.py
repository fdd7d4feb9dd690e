"""The layers, as rules every module keeps (checked on the source, not by hand).

* ``protocol/`` is pure: the standard library and itself, nothing else;
* the shared bottom (``errors``, ``log``, ``settings``, ``condor_syntax``)
  imports only ``protocol`` below it;
* ``job/`` (ad -> model) imports no driver, VM, gahp or run code;
* ``drivers/`` never imports ``vm/``, ``gahp/`` or ``run/``, and a backend
  never imports another backend;
* ``vm/`` sees drivers only through ``drivers.base``;
* ``run/`` talks to the gahp only through ``protocol`` and a process: no
  ``gahp/``, ``vm/`` or backend module (the registry, for host defaults, is allowed).

Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and
are not counted.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vmgahp"
BACKENDS = sorted(p.name for p in (SRC / "drivers").iterdir() if (p / "__init__.py").exists())


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names this module imports at run time."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _allowed(module: str, target: str) -> str | None:
    """None if ``module`` may import ``target``, else the rule it breaks."""
    if not target.startswith("vmgahp"):
        if module.startswith("vmgahp.protocol") and target.split(".")[0] not in sys.stdlib_module_names:
            return "protocol/ uses the standard library only"
        return None
    if module.startswith("vmgahp.protocol") and not target.startswith("vmgahp.protocol"):
        return "protocol/ imports nothing above it"
    bottom = ("vmgahp.errors", "vmgahp.log", "vmgahp.settings", "vmgahp.condor_syntax")
    if module in bottom and not target.startswith(("vmgahp.protocol", *bottom)) and target != "vmgahp":
        return "the shared bottom imports only protocol/"
    if module.startswith("vmgahp.job") and target.startswith(
            ("vmgahp.drivers", "vmgahp.vm", "vmgahp.gahp", "vmgahp.run")):
        return "job/ imports no driver, VM, gahp or run code"
    if module.startswith("vmgahp.drivers"):
        if target.startswith(("vmgahp.vm", "vmgahp.gahp", "vmgahp.run")):
            return "drivers/ never import vm/, gahp/ or run/"
        for backend in BACKENDS:
            own = module.startswith(f"vmgahp.drivers.{backend}")
            if target.startswith(f"vmgahp.drivers.{backend}") and not own and module != "vmgahp.drivers.registry":
                return "a backend never imports another backend"
    if module.startswith("vmgahp.vm") and target.startswith("vmgahp.drivers") and not target.startswith(
            "vmgahp.drivers.base"):
        return "vm/ sees drivers only through drivers.base"
    if module.startswith("vmgahp.run"):
        if target.startswith(("vmgahp.gahp", "vmgahp.vm")):
            return "run/ talks to the gahp through protocol/ and a process"
        if any(target.startswith(f"vmgahp.drivers.{backend}") for backend in BACKENDS):
            return "run/ uses no backend module (the registry only)"
    return None


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_keeps_the_layer_rules(path: Path) -> None:
    module = _module_name(path)
    broken = {target: rule for target in _imports(path) if (rule := _allowed(module, target))}
    assert not broken, f"{module}: " + "; ".join(f"imports {t} ({r})" for t, r in sorted(broken.items()))


def test_the_rules_can_fail() -> None:
    """Each rule rejects what it should (so a passing run means something)."""
    assert _allowed("vmgahp.protocol.session", "vmgahp.vm.runtime")
    assert _allowed("vmgahp.protocol.wire", "pydantic")
    assert _allowed("vmgahp.vm.lifecycle", "vmgahp.drivers.libvirt.driver")
    assert _allowed("vmgahp.run.cli", "vmgahp.gahp.daemon")
    assert _allowed("vmgahp.drivers.libvirt.driver", "vmgahp.vm.lifecycle")
    assert _allowed("vmgahp.job.model", "vmgahp.drivers.libvirt")
    assert _allowed("vmgahp.vm.lifecycle", "vmgahp.drivers.base") is None
    assert _allowed("vmgahp.run.cli", "vmgahp.protocol.client") is None


def test_modules_stay_small() -> None:
    """One job per module: about 400 lines at most."""
    large = {str(p.relative_to(SRC)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 420}
    assert not large, large


# ------------------------------------------------------ README's layout block
README = SRC.parents[1] / "README.md"


def _layout_entries(text: str) -> tuple[set[str], set[str]]:
    """The names README's layout block lists: (paths under src/vmgahp/, top-level
    folders). An entry line starts at indent 0, 2 or 4 with names that end in
    ``/`` or ``.py``; indent 4 is a package inside the indent-2 one above it.
    Deeper-indented lines continue a description."""
    block = text.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    inner: set[str] = set()
    top: set[str] = set()
    parent = ""
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent not in (0, 2, 4) or not line.strip():
            continue
        names = []
        for word in line.split():
            if not word.endswith(("/", ".py")) or "`" in word:
                break
            names.append(word)
        assert names, f"README layout: {line!r} names nothing"
        if indent == 0:
            top.update(n for n in names if n != "src/vmgahp/")
        elif indent == 2:
            inner.update(names)
            parent = names[-1] if names[-1].endswith("/") else ""
        else:
            assert parent, f"README layout: {line!r} is not inside a package"
            inner.update(parent + n for n in names)
    return inner, top


def test_readme_layout_matches_the_tree() -> None:
    """Every package (and every module outside one) is in README's layout block,
    and everything listed there exists."""
    inner, top = _layout_entries(README.read_text())
    packages = {str(p.parent.relative_to(SRC)) + "/" for p in SRC.rglob("__init__.py") if p.parent != SRC}
    modules = {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert packages | modules == inner, (
        f"missing from README: {sorted((packages | modules) - inner)}; "
        f"listed but not in src/vmgahp: {sorted(inner - (packages | modules))}")
    missing = sorted(name for name in top if not (README.parent / name).exists())
    assert not missing, f"README's layout lists {missing}, which do not exist"


def test_the_layout_check_can_fail() -> None:
    text = README.read_text()
    inner, _ = _layout_entries(text.replace("  run/ ", "  running/ ", 1))
    assert "running/" in inner and "run/" not in inner
    inner, _ = _layout_entries(text.replace("    vmware/ ", "    vmwar/ ", 1))
    assert "drivers/vmwar/" in inner and "drivers/vmware/" not in inner
