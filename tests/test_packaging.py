"""The environment files agree, and the bootstrap is idempotent."""

import os
import shutil
import subprocess
import tomllib

import pytest

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


PLATFORMS = {  # the environment markers pip evaluates on each platform (Python 3.11)
    "linux-x86_64": {"sys_platform": "linux", "platform_machine": "x86_64", "os_name": "posix"},
    "macos-arm64": {"sys_platform": "darwin", "platform_machine": "arm64", "os_name": "posix"},
}


def _selected(platform: str) -> dict[str, str]:
    """name -> version of the lock's pins that pip installs on ``platform``."""
    from packaging.requirements import Requirement

    env = {
        "python_version": "3.11", "python_full_version": "3.11.7", "implementation_name": "cpython",
        "platform_python_implementation": "CPython", "platform_system": "", "platform_release": "",
        "platform_version": "", "extra": "",
    } | PLATFORMS[platform]  # fmt: skip
    out = {}
    for line in _pins((REPO_ROOT / "requirements.lock").read_text().splitlines()):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
    return out


def test_the_lock_serves_linux_with_cuda_and_macos_without():
    linux, mac = _selected("linux-x86_64"), _selected("macos-arm64")
    cuda = {n for n in linux if n.startswith(("nvidia-", "cuda-")) or n == "triton"}
    assert {"triton", "cuda-toolkit", "nvidia-cublas"} <= cuda
    assert not cuda & set(mac), "a CUDA wheel would be asked for on macOS"
    for name in ("torch", "torchvision", "torch-geometric", "openslide-bin", "timm", "papermill"):
        assert linux[name] == mac[name], name  # one version of everything else
    assert linux["torch"] == "2.14.1" and "appnope" in mac and "appnope" not in linux
    assert set(linux) - cuda == set(mac) - {"appnope"}


@pytest.mark.skipif(
    os.environ.get("WSIGRAPH_NETWORK_TESTS") != "1" or shutil.which("uv") is None,
    reason="resolving against the package index needs the network and uv (WSIGRAPH_NETWORK_TESTS=1)",
)
@pytest.mark.parametrize("platform", ["x86_64-unknown-linux-gnu", "aarch64-apple-darwin"])
def test_the_lock_resolves_on_each_platform_without_installing(platform, tmp_path):
    out = subprocess.run(
        ["uv", "pip", "compile", str(REPO_ROOT / "requirements.lock"), "--python-platform",
         platform, "--python-version", "3.11.7", "--no-deps", "-o", str(tmp_path / "x.txt")],
        capture_output=True, text=True,
        env=os.environ | {"MACOSX_DEPLOYMENT_TARGET": "14.0"},  # torch 2.14's macOS wheels: 14+
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_the_gpu_check_script_names_what_it_runs_and_stops_clearly_without_a_gpu():
    """scripts/gpu_checks.sh (issue 21): every test file and benchmark it names exists, and on a
    machine without CUDA it stops at once with exit status 2 and says why."""
    import re
    import sys

    import torch

    script = REPO_ROOT / "scripts" / "gpu_checks.sh"
    text = script.read_text()
    named = set(re.findall(r"tests/test_\w+\.py", text))
    assert len(named) >= 7 and all((REPO_ROOT / p).is_file() for p in named), named
    for bench in re.search(r"for bench in ([\w ]+); do", text).group(1).split():
        assert (REPO_ROOT / "benchmarks" / f"{bench}.py").is_file(), bench
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the checks")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device here" in done.stderr
