"""docs/design.md's layers, checked by reading the source (not by importing it), function-level
imports included.

- model/ imports no other tandem package; curation/ may import model/; training/ may import
  model/ and, of curation/, only the clip shard's reader (curation.shards); reward/ may
  import model/, training/ and curation/; pipelines/ may import anything.
- reward/ is four rooms, each of which may import the rooms before it: rollouts (what a
  checkpoint generated) <- annotation (judgements of rollouts, and simulated ones) <- scoring
  (the reward model, trained on the rankings) <- grpo (alignment against reward sources).
  Every reward module lives in a room.
- ray and mlflow are imported only under pipelines/, so every other package runs under plain
  Python or torchrun; deepspeed only under training/ (and pipelines/, which drives it).
- No import cycles, within a package either: a module that needs another's helper and is
  needed by it means the helper belongs lower (a cycle through a function-level import is one
  too: it only waits for the call to bite).
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
REWARD_ROOMS = ("reward.rollouts", "reward.annotation", "reward.scoring", "reward.grpo")
for i, room in enumerate(REWARD_ROOMS):
    MAY_IMPORT[room] = {*REWARD_ROOMS[: i + 1], *(MAY_IMPORT["reward"] - {"reward"})}
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
    """file -> the imports it may not make, of a package (``model``) or a room (``reward.grpo``)."""
    folder = ROOT.joinpath(*package.split("."))
    files = sorted(folder.rglob("*.py"))
    assert files, f"{folder.relative_to(ROOT)}/ has no Python files"
    rules, top, out = MAY_IMPORT[package], package.split(".")[0], {}
    for f in files:
        modules = imported_modules(f)
        # ``from curation import shards`` names curation and curation.shards: the bare parent
        # is judged by the modules it was the parent of.
        bare_parents = {m for m in modules if any(n.startswith(m + ".") for n in modules)}
        bad = [m for m in sorted(modules)
               if (m.split(".")[0] in PACKAGES and not allowed(m, rules) and m not in bare_parents)
               or (m.split(".")[0] in ONLY_IN and top not in ONLY_IN[m.split(".")[0]])]
        if bad:
            out[str(f.relative_to(ROOT))] = bad
    return out


@pytest.mark.parametrize("package", PACKAGES + REWARD_ROOMS)
def test_package_respects_the_layers(package):
    bad = violations(package)
    assert not bad, f"{package} may import only {sorted(MAY_IMPORT[package])} of tandem: {bad}"


def test_every_reward_module_lives_in_a_room():
    rooms = [ROOT.joinpath(*room.split(".")) for room in REWARD_ROOMS]
    homeless = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "reward").rglob("*.py"))
                if f != ROOT / "reward" / "__init__.py" and not any(r in f.parents for r in rooms)]
    assert not homeless, f"reward/ modules outside its rooms {REWARD_ROOMS}: {homeless}"


def test_checker_sees_function_level_and_from_imports(tmp_path):
    src = ROOT / "training" / "_probe_for_test.py"
    src.write_text("def f():\n    import ray.data\n    from deepspeed import zero\n    from curation import clip\n")
    try:
        assert {"ray.data", "deepspeed", "curation.clip"} <= imported_modules(src)
        assert violations("training") == {"training/_probe_for_test.py": ["curation.clip", "ray.data"]}
    finally:
        src.unlink()


def test_checker_holds_each_reward_room_to_the_rooms_before_it():
    src = ROOT / "reward" / "annotation" / "_probe_for_test.py"
    src.write_text("from reward.rollouts.rollout_dir import read_rollouts\n"
                   "def f():\n    from reward.scoring import sources\n    import reward.grpo.align\n")
    try:
        assert violations("reward.annotation") == {
            "reward/annotation/_probe_for_test.py": ["reward.grpo.align", "reward.scoring.sources"],
        }
    finally:
        src.unlink()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """tandem module -> the tandem modules it imports (function-level imports included;
    ``from a import b``: arrows to ``a``, whose ``__init__`` runs first, and to ``a.b`` when that
    is a module)."""
    files = {module_name(f): f for package in PACKAGES for f in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imported_modules(path) if m in files} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_cycle_finder_finds_a_cycle_through_function_level_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph()
    assert "curation.units" in graph["curation.pipeline"]
    assert "pipelines.ray_adapter" in graph["pipelines.curate"]  # imported inside run_curation


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
    src = ROOT / "reward" / "grpo" / "_probe_for_test.py"
    src.write_text("def f():\n    from benchmarks.judges import make_panel\n")
    try:
        assert judge_imports("reward") == {"reward/grpo/_probe_for_test.py": ["benchmarks.judges",
                                                                          "benchmarks.judges.make_panel"]}
    finally:
        src.unlink()
