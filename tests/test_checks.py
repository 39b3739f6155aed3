"""scratchformers.checks: each shared helper exists once, and no module imports one the book reads later."""
import ast
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scratchformers.checks import (atomic_dir, atomic_path, atomic_save, atomic_write_text, check_ids,
                                   check_input_ids, check_labels, check_mask_values, is_int, is_number)

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "scratchformers"


def _modules() -> dict[str, ast.Module]:
    "name -> parsed source of every module of the package (the generated index left out)."
    return {f.stem: ast.parse(f.read_text(encoding="utf-8")) for f in sorted(PKG.glob("*.py"))
            if f.name != "_modidx.py"}


def _functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


def _calls(tree: ast.Module, module: str, name: str) -> list[str]:
    "Names of the functions (or '<module>') in which `module.name(...)` is called."
    found = []
    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr == name
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == module):
                found.append(where)
            visit(child, inner)
    visit(tree, "<module>")
    return found


# ---------------------------------------------------------------- each helper exists once

def test_integer_and_number_checks_are_defined_once():
    defined = [(m, f.name) for m, t in _modules().items() for f in _functions(t)
               if re.fullmatch(r"_?is_(int|integer|number|real)", f.name)]
    assert sorted(defined) == [("checks", "is_int"), ("checks", "is_number")], defined


@pytest.mark.parametrize("name", ["_check", "_check_ids", "_check_like", "_check_input_ids", "_check_labels",
                                  "_check_mlm_labels", "_atomic_path", "_write_atomic", "_require_int",
                                  "_require_real", "_require_choice", "_umask", "_fsync_dir"])
def test_old_copies_are_gone(name):
    where = [m for m, t in _modules().items() if m != "checks" for f in _functions(t) if f.name == name]
    assert not where, f"{name} is defined in {where}: use scratchformers.checks instead"


def test_fsync_and_replace_happen_only_in_checks():
    for m, tree in _modules().items():
        fsyncs = _calls(tree, "os", "fsync")
        assert m == "checks" or not fsyncs, f"{m} syncs files itself ({fsyncs}): use checks.atomic_*"
        replaces = _calls(tree, "os", "replace") + _calls(tree, "os", "rename")
        allowed = {"checks": {"atomic_path", "atomic_dir"}, "data": {"_discard"}}  # _discard moves aside
        assert set(replaces) <= allowed.get(m, set()), f"{m} renames files itself in {replaces}"
    assert _calls(_modules()["checks"], "os", "fsync"), "checks no longer syncs: the test proves nothing"


def test_value_checks_of_tensors_live_in_checks():
    "The models call the shared, compile-safe checks instead of comparing ids with their table sizes."
    for m in ("bert", "gpt2", "generation"):
        src = (PKG / f"{m}.py").read_text(encoding="utf-8")
        assert "from .checks import" in src, m
        assert not re.search(r"input_ids\.(min|max)\(\)", src), f"{m} checks input id values itself"
        assert not re.search(r"labels < 0|labels >= vocab_size", src), f"{m} checks label values itself"
        assert not re.search(r"attention_mask != 0\) & \(attention_mask != 1", src), m


def test_model_sizes_come_from_one_table():
    from scratchformers.bert import BERT_SIZES, BertConfig
    from scratchformers.gpt2 import GPT2_SIZES, GPT2Config
    from scratchformers.training import BERT_PRESETS, GPT2_PRESETS
    assert BERT_PRESETS["tiny"].model_overrides == BERT_SIZES["tiny"]
    assert GPT2_PRESETS["tiny"].model_overrides == GPT2_SIZES["tiny"]
    for name, sizes in BERT_SIZES.items():
        config = getattr(BertConfig, name)(vocab_size=100)
        assert all(getattr(config, k) == v for k, v in sizes.items()), name
    for name, sizes in GPT2_SIZES.items():
        config = getattr(GPT2Config, name)(vocab_size=100)
        assert all(getattr(config, k) == v for k, v in sizes.items()), name
    training = (PKG / "training.py").read_text(encoding="utf-8")
    assert not re.search(r"n_embd=\d|hidden_size=\d", training), "training.py spells out a model size"


# ---------------------------------------------------------------- imports follow the reading order

def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    order = []
    def walk(entries):
        for e in entries or []:
            order.append(e["file"])
            walk(e.get("sections"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return order


def _module_of(notebook: Path) -> str | None:
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if m := re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M):
            return m.group(1)
    return None


def _imports(tree: ast.Module) -> set[str]:
    "Package modules imported anywhere in `tree` (relative or as scratchformers.x, at any depth)."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1 and n.module: out.add(n.module.split(".")[0])
            elif n.level == 0 and (n.module or "").startswith("scratchformers."):
                out.add(n.module.split(".")[1])
            elif n.module == "scratchformers" or (n.level == 1 and not n.module):
                out.update(a.name for a in n.names)
        elif isinstance(n, ast.Import):
            out.update(a.name.split(".")[1] for a in n.names if a.name.startswith("scratchformers."))
    return out


LATE_IMPORTS_ALLOWED = {
    # GPT2LMHeadModel.generate is a shortcut to chapter 7's `generate`, imported when it is called
    # (gpt2 never needs generation to load or to run its forward pass)
    ("gpt2", "generation"),
    # still open (issue 8): BERT's models derive from weights.PreTrainedModel, whose section the
    # book reads right after the BERT chapter
    ("bert", "weights"),
}


def test_no_module_imports_one_the_book_reads_later():
    order = {}
    for f in _toc_files():
        nb = ROOT / f"{f}.ipynb"
        if nb.exists() and (mod := _module_of(nb)):
            order.setdefault(mod, len(order))
    assert {"checks", "corpus", "bert", "gpt2", "training"} <= set(order), order
    assert order["checks"] == 0, "the checks module must come first: every module imports it"
    modules = _modules()
    assert set(order) == set(modules) - {"__init__"}, "every module comes from a notebook in the TOC"
    for mod, tree in modules.items():
        if mod == "__init__": continue
        for dep in _imports(tree) - {"__init__", "__version__", mod}:
            if (mod, dep) in LATE_IMPORTS_ALLOWED: continue
            assert order[dep] < order[mod], f"{mod} (page {order[mod]}) imports {dep} (page {order[dep]})"


def test_checks_imports_nothing_heavy():
    "checks is the first module: the standard library only, and torch only when a tensor needs it."
    tree = _modules()["checks"]
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "math", "numbers", "os", "shutil", "tempfile", "contextlib",
                     "dataclasses", "pathlib"}, names
    inner = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) and n not in top for a in n.names}
    assert inner <= {"torch"}, inner


def test_the_text_chapters_do_not_load_torch():
    "The tokenizers start (and stop on Ctrl-C) without PyTorch, although they use checks."
    import subprocess, sys
    code = ("import sys, scratchformers.checks, scratchformers.tokenization; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---------------------------------------------------------------- the helpers themselves

def test_is_int_and_is_number():
    assert [is_int(x) for x in (3, np.int64(3), True, 3.0, "3")] == [True, True, False, False, False]
    assert [is_number(x) for x in (0.5, np.float32(0.5), 2, False, None)] == [True, True, True, False, False]


def test_configs_store_python_numbers():
    "NumPy scalars become Python numbers, which json and torch.load(weights_only=True) read."
    from scratchformers.bert import BertConfig
    from scratchformers.data import DataScale
    from scratchformers.training import TrainConfig
    cfg = TrainConfig(lr=np.float64(1e-3), batch_size=np.int64(4))
    assert type(cfg.lr) is float and type(cfg.batch_size) is int
    assert type(BertConfig.tiny(vocab_size=np.int32(50)).vocab_size) is int
    assert type(DataScale("x", n_reviews=np.int64(10)).n_reviews) is int
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got True"):
        TrainConfig(batch_size=True)


def test_tensor_checks_and_their_messages():
    ids = torch.tensor([[1, 2, 3]])
    assert tuple(check_input_ids(ids, 4)) == (1, 3)
    with pytest.raises(TypeError, match="LongTensor of integer token ids, got torch.float32"):
        check_input_ids(ids.float(), 4)
    with pytest.raises(ValueError, match=r"input_ids holds values in \[1, 3\], outside the vocabulary \[0, 3\): \[3\]"):
        check_input_ids(ids, 3)
    with pytest.raises(ValueError, match=r"holds values in \[-1, 3\].*: \[-1\]"):
        check_ids("input_ids", torch.tensor([[-1, 3]]), 10)
    with pytest.raises(ValueError, match=r"only 0 \(padding\) and 1 \(real token\), got values \[0, 2\]"):
        check_mask_values(torch.tensor([[0, 2]]))
    check_mask_values(torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match=r"labels has shape \(1, 2\).*the model shifts them itself"):
        check_labels(ids[:, :2], ids, 4, shifted_by_model=True)
    with pytest.raises(TypeError, match=r"labels must hold integer token ids \(torch.long\)"):
        check_labels(ids.float(), ids, 4)


def test_tensor_value_checks_do_not_break_a_compiled_graph():
    def f(ids, labels, mask):
        check_input_ids(ids, 10)
        check_labels(labels, ids, 10)
        check_mask_values(mask)
        return ids * 2
    compiled = torch.compile(f, backend="eager", fullgraph=True)  # a graph break would raise
    ids = torch.tensor([[1, 12]])
    assert compiled(ids, ids, ids).tolist() == [[2, 24]]  # values not checked inside the graph
    with pytest.raises(ValueError, match="outside the vocabulary"):
        f(ids, ids, ids)


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = atomic_write_text("old", tmp_path / "a" / "f.txt")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["f.txt"]
    with pytest.raises(Exception):
        atomic_save({"f": lambda: 0}, tmp_path / "a" / "f.txt")  # cannot be pickled
    assert path.read_text() == "old"
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not mkstemp's 0o600


def test_atomic_dir_publishes_whole_directories_and_keeps_a_concurrent_one(tmp_path):
    def write(tmp):
        tmp.mkdir()
        (tmp / "x").write_text("1")
    atomic_dir(tmp_path / "d", write)
    assert (tmp_path / "d" / "x").read_text() == "1"
    def other(tmp):  # another process published "d" first: os.replace onto a full directory fails
        tmp.mkdir()
        (tmp / "x").write_text("2")
    atomic_dir(tmp_path / "d", other)
    assert (tmp_path / "d" / "x").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    def broken(tmp):
        tmp.mkdir()
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_dir(tmp_path / "e", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
