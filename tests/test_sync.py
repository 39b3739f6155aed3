"""The committed package is exactly what the notebooks export, and the notebooks are committed clean."""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


def _copy_project(dest: Path) -> Path:
    for name in ("settings.ini", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns("_artifacts", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "scratchformers", dest / "scratchformers", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _differences(a: Path, b: Path, pattern: str) -> list[str]:
    names = sorted({p.name for p in a.glob(pattern)} | {p.name for p in b.glob(pattern)})
    return [n for n in names if not ((a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False))]


def test_notebooks_exist_for_every_module():
    mods = {p.stem for p in (ROOT / "scratchformers").glob("*.py")} - {"__init__", "_modidx"}
    exported = set()
    for nb in (ROOT / "book").glob("*.ipynb"):
        text = nb.read_text(encoding="utf-8")
        exported |= {m for m in mods if f"default_exp {m}" in text}
    assert mods, "no modules exported"
    assert mods == exported, f"modules with no notebook: {sorted(mods - exported)}"


def test_fresh_export_changes_nothing(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([str(BIN / "nbdev_export")], cwd=proj, check=True, capture_output=True)
    diff = _differences(ROOT / "scratchformers", proj / "scratchformers", "*.py")
    diff += [f"pyproject.toml"] if not filecmp.cmp(ROOT / "pyproject.toml", proj / "pyproject.toml", shallow=False) else []
    assert not diff, f"nbdev_export changes {diff}: run `nbdev_export` and commit the notebooks and the package together"


def test_notebooks_are_clean(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([str(BIN / "nbdev_clean")], cwd=proj, check=True, capture_output=True)
    diff = _differences(ROOT / "book", proj / "book", "*.ipynb")
    assert not diff, f"nbdev_clean changes {diff}: run `nbdev_clean` and commit the cleaned notebooks"
