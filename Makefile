# The two commands of the README: `make book` and `make test`. Each sets itself up from nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# No hub at run time: a stray hub call fails fast instead of hanging.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# tqdm.auto's notice that ipywidgets is absent (it falls back to text bars, which the book shows)
export PYTHONWARNINGS := ignore:IProgress not found

.PHONY: setup chromium export fmt lint nbdev-test book test clean

## setup: a virtual environment with the pinned toolchain and the library installed editable
setup: $(STAMP)
$(STAMP): requirements-dev.txt settings.ini setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install -q -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import torch, nbdev, jupyter_book, transformers, scratchformers; print('toolchain ok: torch', torch.__version__)"
	touch $(STAMP)

## chromium: Debian's headless Chromium for the page checks
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

## export: regenerate the package and the tests (tests/*.py, from `#| test_file` cells);
## the package is fitted to 80 columns as the cells are (nbdev writes `__all__` 120 wide)
export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/python _ext/fit_page.py --quiet scratchformers
	$(BIN)/python _ext/export_tests.py

## fmt: fit the notebooks, benchmarks and _ext to 80 columns (_ext/fit_page.py), then export
fmt: $(STAMP)
	$(BIN)/python _ext/fit_page.py
	$(BIN)/nbdev_clean
	$(MAKE) export

## lint: what tests/test_style.py checks
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## nbdev-test: run every chapter as a test (cells flagged `#| slow` are left to the book build)
nbdev-test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --do_print --timing

## book: build the executed website into _build/html
book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

## test: every check — package in sync, notebooks clean, nbdev_test, the book, pytest (with Chromium)
test: $(STAMP) chromium
	$(MAKE) nbdev-test
	$(MAKE) book
	$(BIN)/python -m pytest tests -ra

clean:
	rm -rf _build .pytest_cache
