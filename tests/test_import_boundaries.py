"""DESIGN.md's layers, checked by reading the source (not by importing it), function-level
imports included.

- model/ imports no other tandem package; curation/ may import model/; training/ may import
  model/ and, of curation/, only the clip shard's reader (curation.shards); reward/ may
  import model/, training/ and curation/; pipelines/ may import anything.
- ray and mlflow are imported only under pipelines/, so every other package runs under plain
  Python or torchrun; deepspeed only under training/ (and pipelines/, which drives it).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "curation", "training", "reward", "pipelines")
# package -> the tandem modules it may import (a module, or everything under it)
MAY_IMPORT = {
    "model": {"model"},
    "curation": {"curation", "model"},
    "training": {"training", "model", "curation.shards"},
    "reward": {"reward", "model", "training", "curation"},
    "pipelines": set(PACKAGES),
}
ONLY_IN = {"ray": {"pipelines"}, "mlflow": {"pipelines"}, "deepspeed": {"training", "pipelines"}}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, fully qualified (``from a import b`` counts as ``a.b``
    too, since b may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).parent.parts)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def allowed(module: str, rules: set[str]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rules)


def violations(package: str) -> dict[str, list[str]]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    rules, out = MAY_IMPORT[package], {}
    for f in files:
        modules = imported_modules(f)
        # ``from curation import shards`` names curation and curation.shards: the bare parent
        # is judged by the modules it was the parent of.
        bare_parents = {m for m in modules if any(n.startswith(m + ".") for n in modules)}
        bad = [m for m in sorted(modules)
               if (m.split(".")[0] in PACKAGES and not allowed(m, rules) and m not in bare_parents)
               or (m.split(".")[0] in ONLY_IN and package not in ONLY_IN[m.split(".")[0]])]
        if bad:
            out[str(f.relative_to(ROOT))] = bad
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_package_respects_the_layers(package):
    bad = violations(package)
    assert not bad, f"{package}/ may import only {sorted(MAY_IMPORT[package])} of tandem: {bad}"


def test_checker_sees_function_level_and_from_imports(tmp_path):
    src = ROOT / "training" / "_probe_for_test.py"
    src.write_text("def f():\n    import ray.data\n    from deepspeed import zero\n    from curation import clip\n")
    try:
        assert {"ray.data", "deepspeed", "curation.clip"} <= imported_modules(src)
        assert violations("training") == {"training/_probe_for_test.py": ["curation.clip", "ray.data"]}
    finally:
        src.unlink()


# The judge panel (benchmarks/judges.py) measures what alignment learned: a package that
# trains or scores a model must not see it, or the reward could be fitted to the judges' rules.
JUDGED = ("model", "training", "reward")
JUDGE_CODE = ("benchmarks", "tests")


def judge_imports(package: str) -> dict[str, list[str]]:
    out = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        bad = sorted(m for m in imported_modules(f) if m.split(".")[0] in JUDGE_CODE)
        if bad:
            out[str(f.relative_to(ROOT))] = bad
    return out


@pytest.mark.parametrize("package", JUDGED)
def test_models_and_rewards_cannot_import_the_judges(package):
    bad = judge_imports(package)
    assert not bad, f"{package}/ imports test or benchmark code (where the judges live): {bad}"


def test_judge_checker_sees_an_import_of_the_panel(tmp_path):
    assert (ROOT / "benchmarks" / "judges.py").is_file()
    src = ROOT / "reward" / "_probe_for_test.py"
    src.write_text("def f():\n    from benchmarks.judges import make_panel\n")
    try:
        assert judge_imports("reward") == {"reward/_probe_for_test.py": ["benchmarks.judges",
                                                                          "benchmarks.judges.make_panel"]}
    finally:
        src.unlink()
