"""The `scratchformers` command: help, a tiny end-to-end run of each command, and errors that say what to fix."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchformers.cli import main
from scratchformers.training import CHECKPOINT_NAME


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli-cache"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "gpt2"
    assert main(["train-gpt2", "--preset", "tiny", "--steps", "4", "--save-every", "2", "--output-dir", str(out),
                 "--cache-dir", cache, "--no-progress"]) == 0
    return out


def run_main(capsys, *argv):
    "main(argv) -> (exit code, stdout, stderr); argparse's SystemExit becomes its code."
    try: code = main(list(argv))
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_console_script_help():
    "The installed `scratchformers` entry point works (a real process)."
    script = Path(sys.executable).parent / "scratchformers"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-c", "from scratchformers.cli import main; raise SystemExit(main())"]
    proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pretrain-bert" in proc.stdout and "train-gpt2" in proc.stdout


@pytest.mark.parametrize("command, words", [("pretrain-bert", ["--preset", "--steps", "--output-dir", "--resume"]),
                                            ("train-gpt2", ["--preset", "--steps", "--output-dir", "--resume"]),
                                            ("generate", ["--model-dir", "--prompt", "--max-new-tokens", "--top-k"])])
def test_help_of_each_command(capsys, command, words):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0 and all(w in out for w in words)
    if command != "generate": assert "pocket" in out and "full" in out


def test_train_gpt2_and_generate(capsys, gpt2_dir):
    transformers = pytest.importorskip("transformers")
    files = sorted(p.name for p in gpt2_dir.iterdir())
    assert files == [CHECKPOINT_NAME, "config.json", "history.json", "model.safetensors", "tokenizer.json"]
    assert len(json.loads((gpt2_dir / "history.json").read_text())["train"]) == 4
    transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    code, out, err = run_main(capsys, "generate", "--model-dir", str(gpt2_dir), "--prompt", "This movie",
                              "--max-new-tokens", "8", "--num-samples", "2", "--seed", "1")
    assert code == 0, err
    samples = [s for s in out.split("\n\n") if s.strip()]
    assert len(samples) == 2 and all(s.startswith("This movie") for s in samples)
    again = run_main(capsys, "generate", "--model-dir", str(gpt2_dir), "--prompt", "This movie", "--max-new-tokens", "8",
                     "--num-samples", "2", "--seed", "1")
    assert again[1] == out  # seeded
    code, out, err = run_main(capsys, "generate", "--model-dir", str(gpt2_dir), "--greedy", "--max-new-tokens", "5")
    assert code == 0, err


def test_pretrain_bert_and_resume(capsys, tmp_path, cache):
    out = tmp_path / "bert"
    args = ["pretrain-bert", "--preset", "tiny", "--steps", "4", "--save-every", "2", "--output-dir", str(out),
            "--cache-dir", cache, "--no-progress"]
    code, stdout, err = run_main(capsys, *args)
    assert code == 0, err
    assert "mlm_accuracy" in stdout and "nsp_accuracy" in stdout and (out / "model.safetensors").is_file()
    code, _, err = run_main(capsys, *args)  # the same output directory again, without --resume
    assert code == 1 and "--resume" in err
    code, stdout, err = run_main(capsys, *args, "--resume")  # finished already: nothing left but saving
    assert code == 0, err
    code, _, err = run_main(capsys, *[a if a != "4" else "6" for a in args], "--resume")  # a different run
    assert code == 1 and "max_steps: 4 in the checkpoint, 6 now" in err


@pytest.mark.parametrize("argv, message", [
    (["train-gpt2", "--lr", "0"], "--lr: '0' is not a positive number"),
    (["train-gpt2", "--lr", "-3e-4"], "--lr"),
    (["pretrain-bert", "--steps", "0"], "--steps: '0' is not a positive integer"),
    (["pretrain-bert", "--steps", "ten"], "--steps: 'ten' is not a positive integer"),
    (["train-gpt2", "--preset", "huge"], "invalid choice: 'huge'"),
    (["generate"], "--model-dir"),
    (["generate", "--model-dir", "x", "--temperature", "0"], "--temperature"),
])
def test_bad_arguments(capsys, argv, message):
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and message in err


def test_errors_that_say_what_to_fix(capsys, tmp_path, gpt2_dir, cache):
    code, _, err = run_main(capsys, "generate", "--model-dir", str(gpt2_dir), "--prompt", "word " * 40)
    assert code == 1 and "n_positions=32" in err and "Traceback" not in err  # the prompt is longer than the context
    code, _, err = run_main(capsys, "generate", "--model-dir", str(gpt2_dir), "--prompt", "hello", "--max-new-tokens", "100")
    assert code == 1 and "at most" in err
    code, _, err = run_main(capsys, "generate", "--model-dir", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in err
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", str(tmp_path / "fresh"),
                            "--cache-dir", cache, "--resume")
    assert code == 1 and "no checkpoint" in err
