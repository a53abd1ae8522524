"""The wheel works outside the checkout: built with ``python -m build``, installed (not editable, ``--no-deps``) into
a fresh virtual environment that reuses this environment's dependencies, and run from a folder outside the
repository: ``--version``, ``info``, the shipped data (themes, refusal prompts), a short ``steer``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import torch

import flowsteer
from flowsteer.sites import Site

pytest.importorskip("build", reason="python -m build is needed (pip install 'flowsteer[dev]')")
pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "flowsteer", "data")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """``{"python", "flowsteer", "env", "cwd"}`` of a fresh venv holding only the built wheel."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"),
                    str(source)], check=True, capture_output=True, cwd=root)
    (wheel,) = (root / "dist").glob("flowsteer-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLOWSTEER_DATA")}  # no checkout
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, env=env)
    # Then the dependencies installed here, after the venv's own site-packages (so the wheel's flowsteer wins; the
    # .pth files there, the editable install's among them, are not run).
    reused = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "reuse-dependencies.pth").write_text("\n".join(reused) + "\n")
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"python": python, "flowsteer": root / "venv" / "bin" / "flowsteer", "env": env, "cwd": cwd, "site": site}


def run(installed: dict, *args: str) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=installed["env"],
                          cwd=installed["cwd"], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_wheel_carries_the_data_and_the_type_marker(installed):
    package = installed["site"] / "flowsteer"
    shipped = {p.relative_to(package / "_data").as_posix() for p in (package / "_data").rglob("*") if p.is_file()}
    in_repo = {p.relative_to(REPO / "data").as_posix() for p in (REPO / "data").rglob("*") if p.is_file()}
    assert shipped == in_repo and (package / "py.typed").is_file()


def test_version_from_the_console_script(installed):
    assert run(installed, installed["flowsteer"], "--version").strip() == f"flowsteer {flowsteer.__version__}"


def test_data_info_and_steer_outside_the_checkout(installed, tmp_path):
    """One interpreter (each start costs seconds): the shipped data through ``importlib.resources``, then ``flowsteer
    info`` and a short ``flowsteer steer`` on the tiny model through the installed CLI's ``main``."""
    from tests.flow_synthetic import save_bank, topk_sae

    torch.manual_seed(0)
    save_bank({Site(1): topk_sae(torch.randn(16, 64), k=4, site=Site(1))}, tmp_path / "bank")
    model = ["--model", "tiny-random-llama", "--device", "cpu"]
    steer = ["--quiet", "steer", "--feature", "1/res/3", "--mode", "rescale", "--strength", "0", "--prompt", "Hello",
             "--saes", str(tmp_path / "bank"), "--max-new-tokens", "4", *model]
    code = f"""
import flowsteer as fs, flowsteer.resources as r
from flowsteer.cli import main
from flowsteer.refusal import prompts
assert fs.__file__.startswith({str(installed["site"])!r}), fs.__file__
assert r.data_dir() == r.Path({str(installed["site"] / "flowsteer" / "_data")!r}), r.data_dir()
assert {{"neutral", "wedding"}} <= set(fs.steering.load_themes())
assert len(prompts.instructions("harmful", "train")) > 50 and prompts.instructions("harmless", "test")
assert main(["info", *{model!r}]) == 0
assert main({steer!r}) == 0
"""
    out = run(installed, installed["python"], "-c", code)
    assert "layers       4 (0..3)" in out and "FeatureSteerer(mode='rescale', features=1" in out
