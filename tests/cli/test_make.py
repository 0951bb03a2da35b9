"""First run with make: the supported Pythons, a virtualenv left by another Python (or a
broken one) made again, and `make test`'s Python 3.13 pass that fails loudly when there
is no Python 3.13."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # pip upgrades itself from what is here
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def version_of(python: Path) -> str:
    code = "import sys; print(sys.version_info[:2], sys.base_prefix)"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout


def test_python_3_11_to_3_13_are_supported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    supported = SpecifierSet(project["requires-python"])
    assert [v for v in ("3.10.14", "3.11.0", "3.12.0", "3.13.0", "3.14.0") if v in supported] == [
        "3.11.0",
        "3.12.0",
        "3.13.0",
    ]


def test_a_virtualenv_of_another_python_or_a_broken_one_is_made_again(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    other = venv / "bin" / "python"  # what a venv of another Python answers
    other.write_text("#!/bin/sh\necho '3.99 /opt/another-python'\n")
    other.chmod(0o755)
    (venv / "bin" / "pip").write_text("")
    (venv / "bin" / "pip").chmod(0o755)

    made = make("venv", f"VENV={venv}", f"PYTHON={sys.executable}")
    assert made.returncode == 0, made.stderr
    assert "it has 3.99 /opt/another-python: making it again" in made.stdout
    assert version_of(venv / "bin" / "python") == version_of(Path(sys.executable))

    kept = make("venv", f"VENV={venv}", f"PYTHON={sys.executable}")
    assert kept.returncode == 0 and "making it again" not in kept.stdout

    os.remove(venv / "bin" / "python")
    os.symlink(tmp_path / "gone" / "python3", venv / "bin" / "python")  # its Python removed
    broken = make("venv", f"VENV={venv}", f"PYTHON={sys.executable}")
    assert broken.returncode == 0, broken.stderr
    assert "no Python that runs: making it again" in broken.stdout
    assert version_of(venv / "bin" / "python") == version_of(Path(sys.executable))


def test_an_unsupported_python_is_named(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\necho '3.10 /usr'\n")
    old.chmod(0o755)
    out = make("venv", f"VENV={tmp_path / 'venv'}", f"PYTHON={old}")
    assert out.returncode != 0
    assert "is Python 3.10; Postroute needs 3.11, 3.12 or 3.13" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_make_test_fails_without_python_3_13_instead_of_skipping() -> None:
    dry = make("-n", "test")
    assert "POSTROUTE_TEST_DATABASE=sqlite .venv-3.13/bin/pytest" in dry.stdout
    out = make("test-py313", "PY313=")
    assert out.returncode != 0
    assert "no Python 3.13 found" in out.stderr and "PY313=" in out.stderr
