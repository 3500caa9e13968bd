import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

GROUPS = ["demo", "curate", "latents", "train", "submit", "generate", "annotate", "reward", "align", "ui"]


def test_console_script_help():
    out = subprocess.run([str(Path(sys.executable).parent / "tandem"), "--help"], capture_output=True, text=True, check=True).stdout
    for group in GROUPS:
        assert group in out


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_has_help(group, capsys):
    with pytest.raises(SystemExit) as exc:
        main([group, "--help"])
    assert exc.value.code == 0
    assert f"tandem {group}" in capsys.readouterr().out


def test_python_dash_m_entry():
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: tandem" in proc.stdout
