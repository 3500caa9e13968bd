"""No two modules of the tree share a file name (``__init__.py``, ``conftest.py`` and tests/
aside), counting a plural as its singular: ``checkpoint.py`` and ``checkpoints.py`` are one
name. A name found in a traceback, a log line or a grep is then one file."""

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "curation", "training", "reward", "pipelines", "benchmarks", "scripts")
EXEMPT = {"__init__.py", "conftest.py"}


def stem(path: Path) -> str:
    return path.stem.removesuffix("s")


def repeated_names(root: Path, packages=PACKAGES) -> dict[str, list[str]]:
    """name -> the files that share it, for every name more than one file has."""
    by_name = defaultdict(list)
    for package in packages:
        for f in sorted((root / package).rglob("*.py")):
            if f.name not in EXEMPT and "__pycache__" not in f.parts:
                by_name[stem(f)].append(str(f.relative_to(root)))
    return {name: files for name, files in by_name.items() if len(files) > 1}


def test_no_two_modules_share_a_name():
    repeats = repeated_names(ROOT)
    assert not repeats, f"modules sharing a file name (rename one so it says what it is): {repeats}"


def test_check_sees_repeats_across_packages_and_plurals(tmp_path):
    for f in ("model/config.py", "pipelines/config.py", "model/checkpoint.py",
              "training/checkpoints.py", "reward/rollouts/rollout_dir.py", "model/__init__.py",
              "pipelines/__init__.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert repeated_names(tmp_path, ("model", "training", "reward", "pipelines")) == {
        "config": ["model/config.py", "pipelines/config.py"],
        "checkpoint": ["model/checkpoint.py", "training/checkpoints.py"]}
