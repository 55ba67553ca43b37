"""The environment files agree, and the bootstrap is idempotent."""

import subprocess
import tomllib

from wsigraph.profiles import REPO_ROOT


def _pins(lines):
    return sorted(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )


def test_environment_yml_pins_equal_the_lock():
    lock = _pins((REPO_ROOT / "requirements.lock").read_text().splitlines())
    yml = (REPO_ROOT / "environment.yml").read_text().splitlines()
    start = yml.index("  - pip:") + 1
    pip_section = [line.strip().removeprefix("- ") for line in yml[start:]]
    assert _pins(p for p in pip_section if p != "-e .") == lock
    assert any(p.startswith("torch==2.14.1") for p in lock)
    assert any(p.startswith("torchvision==0.29.1") for p in lock)
    for name in (
        "torch-geometric",
        "openslide-python",
        "openslide-bin",
        "papermill",
        "scikit-learn",
        "dask",
    ):
        assert any(p.lower().startswith(name + "==") for p in lock), name


def test_pyproject_packages_lib():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "wsigraph"
    assert meta["tool"]["setuptools"]["package-dir"] == {"": "lib"}


def test_bootstrap_is_idempotent():
    # The suite runs inside the bootstrapped .venv, so the stamp matches: nothing to install.
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "bootstrap.sh")], capture_output=True, text=True, check=True
    )
    assert "installing" not in out.stdout + out.stderr
