"""The `scratchformers` command: help, tiny end-to-end runs of each command, options from files and
flags reaching the library, and errors that say what to fix (one line, never a traceback for a
user's mistake)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import scratchformers
from scratchformers import cli
from scratchformers.cli import build_parser, main, parse_args
from scratchformers.training import BERT_PRESETS, CHECKPOINT_NAME, GPT2_PRESETS

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

# a few documents of plain English, for --data
TEXT = "\n\n".join(
    f"The {w} film was {a}. I watched it {n} times and the {w} story stayed with me. "
    f"Its actors were {a}, and the ending was {b}."
    for n, (w, a, b) in enumerate([("old", "good", "sad"), ("new", "bad", "long"), ("odd", "fine", "short"),
                                   ("long", "great", "happy"), ("short", "dull", "strange"),
                                   ("quiet", "loud", "bright"), ("dark", "kind", "cold"),
                                   ("warm", "silly", "clever")] * 4))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli-cache"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "gpt2"
    assert main(["train-gpt2", "--preset", "tiny", "--steps", "4", "--save-every", "2", "--output-dir", str(out),
                 "--cache-dir", cache, "--no-progress"]) == 0
    return out


@pytest.fixture
def model_copy(gpt2_dir, tmp_path):
    "A copy of the tiny GPT-2 directory, to spoil."
    dest = tmp_path / "model"
    shutil.copytree(gpt2_dir, dest)
    return dest


def run_main(capsys, *argv):
    "main(argv) -> (exit code, stdout, stderr); argparse's SystemExit becomes its code."
    try: code = main([str(a) for a in argv])
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *words):
    "A user error: exit status 1 or 2, one line on stderr naming `words`, no traceback."
    assert code in (1, 2), (code, err)
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for w in words: assert w in err, (w, err)


def python(code: str, **kw) -> str:
    "Run `code` in a fresh interpreter (this checkout first on the path) and return its stdout."
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# --- help, version, presets ------------------------------------------------------------------------------

def test_console_script_help_and_version():
    "The installed `scratchformers` entry point works (a real process)."
    script = Path(sys.executable).parent / "scratchformers"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-c", "from scratchformers.cli import main; raise SystemExit(main())"]
    proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert all(c in proc.stdout for c in ["pretrain-bert", "train-gpt2", "generate", "finetune", "classify"])
    proc = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"scratchformers {scratchformers.__version__}"


@pytest.mark.parametrize("command, words", [
    ("pretrain-bert", ["--preset", "--steps", "--output-dir", "--resume", "--data", "--tokenizer", "--config",
                       "--precision", "--stop-after", "--stop-after-minutes", "--checkpoint-minutes"]),
    ("train-gpt2", ["--preset", "--steps", "--output-dir", "--resume", "--data", "--precision", "--stop-after"]),
    ("generate", ["--model-dir", "--prompt", "--max-new-tokens", "--top-k", "--config"]),
    ("finetune", ["--model-dir", "--preset", "--output-dir", "--epochs", "--lr", "--max-length"]),
    ("classify", ["--model-dir", "--text"])])
def test_help_of_each_command(capsys, command, words):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0 and all(w in out for w in words)


@pytest.mark.parametrize("command, presets", [("pretrain-bert", BERT_PRESETS), ("train-gpt2", GPT2_PRESETS)])
def test_help_explains_each_preset_from_the_tables(capsys, command, presets):
    "Each preset's row gives its layers, width, heads, vocabulary, context, steps and batch from the tables."
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.split("presets (")[1].splitlines()[4:] if line.strip()}
    assert set(rows) == set(presets)
    for name, p in presets.items():
        model, config, seq = cli._model_of("bert" if command == "pretrain-bert" else "gpt2", p)
        shape = ((config.num_hidden_layers, config.hidden_size, config.num_attention_heads)
                 if command == "pretrain-bert" else (config.n_layer, config.n_embd, config.n_head))
        batch = p.train.get("batch_size", 8) * p.train.get("grad_accum_steps", 1)
        steps = str(p.train["max_steps"]) if p.train.get("max_steps") else "1"
        assert rows[name][1:6] == [*map(str, shape), str(config.vocab_size), str(seq)], rows[name]
        assert rows[name][7] == steps and rows[name][9 if steps == "1" else 8] == str(batch), rows[name]
    assert "GFLOP/s" in out  # the time column's basis is stated


def test_import_and_light_commands_need_no_datasets(gpt2_dir):
    "import scratchformers(.gpt2/.bert/.generation), --help, --version and generate import no `datasets`."
    code = (
        "import sys, contextlib, io\n"
        "import scratchformers\n"
        "assert 'torch' not in sys.modules, 'import scratchformers imports torch'\n"
        "import scratchformers.gpt2, scratchformers.bert, scratchformers.generation, scratchformers.weights\n"
        "from scratchformers import GPT2LMHeadModel, BertForPreTraining, generate\n"
        "from scratchformers.cli import main\n"
        "for argv in (['--help'], ['--version'], ['generate', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): main(argv)\n"
        f"assert main(['generate', '--model-dir', {str(gpt2_dir)!r}, '--max-new-tokens', '3']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('datasets', 'pyarrow', 'pandas', 'matplotlib')))\n"
    )
    assert python(code).strip().splitlines()[-1] == "[]"


# --- top-level exports -------------------------------------------------------------------------------------

def test_top_level_exports_are_the_modules_objects():
    from scratchformers import (BertConfig, BertForPreTraining, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model,
                                generate, load_tokenizer, pretrain_bert, TrainConfig, train_gpt2)
    from scratchformers import bert, generation, gpt2, tokenization, training
    assert (BertConfig, BertModel, BertForPreTraining) == (bert.BertConfig, bert.BertModel, bert.BertForPreTraining)
    assert (GPT2Config, GPT2Model, GPT2LMHeadModel) == (gpt2.GPT2Config, gpt2.GPT2Model, gpt2.GPT2LMHeadModel)
    assert generate is generation.generate and load_tokenizer is tokenization.load_tokenizer
    assert (TrainConfig, pretrain_bert, train_gpt2) == (training.TrainConfig, training.pretrain_bert,
                                                         training.train_gpt2)
    assert sorted(scratchformers.__all__) == sorted(scratchformers._MODULE_OF)
    assert "GPT2LMHeadModel" in dir(scratchformers)
    with pytest.raises(AttributeError, match="no attribute 'GPT3'"): scratchformers.GPT3


def test_every_top_level_name_resolves():
    "Every name in __all__ exists in its module (needs the data, generation and classification work merged)."
    missing = [n for n in scratchformers.__all__ if not hasattr(scratchformers, n)]
    assert not missing, f"listed in scratchformers.__all__ but not defined: {missing}"


# --- end to end ----------------------------------------------------------------------------------------------

def test_train_gpt2_and_generate(capsys, gpt2_dir):
    transformers = pytest.importorskip("transformers")
    files = {p.name for p in gpt2_dir.iterdir()}
    assert {CHECKPOINT_NAME, "config.json", "history.json", "model.safetensors", "tokenizer.json"} <= files
    assert len(json.loads((gpt2_dir / "history.json").read_text())["train"]) == 4
    transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    args = ["generate", "--model-dir", gpt2_dir, "--prompt", "This movie", "--max-new-tokens", "8",
            "--num-samples", "2", "--seed", "1"]
    code, out, err = run_main(capsys, *args)
    assert code == 0, err
    samples = [s for s in out.split("\n\n") if s.strip()]
    assert len(samples) == 2 and all(s.startswith("This movie") for s in samples)
    assert run_main(capsys, *args)[1] == out  # seeded
    code, out, err = run_main(capsys, "generate", "--model-dir", gpt2_dir, "--greedy", "--max-new-tokens", "5")
    assert code == 0, err


def test_default_max_new_tokens_fits_the_context(capsys, gpt2_dir):
    "Without --max-new-tokens, a prompt that leaves 4 positions of the tiny model's 32 gets at most 4 tokens."
    from scratchformers.tokenization import load_tokenizer
    tok = load_tokenizer(gpt2_dir)
    words = "the film was good and "
    prompt = ""
    while len(tok.encode(prompt + words).ids) <= 28: prompt += words
    n_prompt = len(tok.encode(prompt).ids)
    code, out, err = run_main(capsys, "generate", "--model-dir", gpt2_dir, "--prompt", prompt, "--greedy")
    assert code == 0, err
    assert out.startswith(prompt) and len(tok.encode(out.rstrip("\n")).ids) <= 32 + 1  # +1: decode/encode seams
    assert cli.new_tokens(None, n_prompt, 32) == 32 - n_prompt
    assert cli.new_tokens(None, 2, 1024) == cli.DEFAULT_NEW_TOKENS


def test_pretrain_bert_and_resume(capsys, tmp_path, cache):
    out = tmp_path / "bert"
    args = ["pretrain-bert", "--preset", "tiny", "--steps", "4", "--save-every", "2", "--output-dir", out,
            "--cache-dir", cache, "--no-progress"]
    code, stdout, err = run_main(capsys, *args)
    assert code == 0, err
    assert "mlm_accuracy" in stdout and "nsp_accuracy" in stdout and (out / "model.safetensors").is_file()
    code, _, err = run_main(capsys, *args)  # the same output directory again, without --resume
    one_line_error(code, err, "--resume")
    code, stdout, err = run_main(capsys, *args, "--resume")  # finished already: nothing left but saving
    assert code == 0, err
    code, _, err = run_main(capsys, *args, "--lr", "0.01", "--resume")  # a different run
    assert code == 1 and "lr: 0.001 in the checkpoint, 0.01 now" in err and "Traceback" not in err


# --- options reach the library ------------------------------------------------------------------------------

class FakeResult:
    "What the CLI reads of a TrainResult."
    def __init__(self, steps=3): self.state, self.final_eval = types.SimpleNamespace(step=steps, seconds=1.0), {"loss": 2.0}


@pytest.fixture
def fake_train(monkeypatch):
    "Replace train_gpt2 and pretrain_bert by recorders of their arguments."
    from scratchformers import training
    calls = []
    def fake(preset, out_dir, **kw):
        calls.append(dict(preset=preset, out_dir=out_dir, **kw))
        return FakeResult()
    monkeypatch.setattr(training, "train_gpt2", fake)
    monkeypatch.setattr(training, "pretrain_bert", fake)
    return calls


def test_training_flags_reach_the_library(capsys, tmp_path, fake_train):
    code, out, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "o",
                              "--precision", "bf16", "--stop-after", "20", "--stop-after-minutes", "1.5",
                              "--checkpoint-minutes", "0", "--device", "cpu", "--lr", "3e-4", "--no-progress")
    assert code == 0, err
    kw = fake_train[-1]
    assert kw["preset"] == "tiny" and kw["out_dir"] == tmp_path / "o" and kw["data"] is None
    assert (kw["precision"], kw["stop_after"], kw["stop_after_minutes"], kw["checkpoint_minutes"]) == ("bf16", 20, 1.5, 0.0)
    assert (kw["device"], kw["lr"], kw["progress"]) == ("cpu", 3e-4, False)
    assert "--resume" in out  # a stopped run says how to continue
    code, _, err = run_main(capsys, "pretrain-bert", "--preset", "tiny", "--output-dir", tmp_path / "p")
    assert code == 0, err
    assert not {"precision", "stop_after", "checkpoint_minutes", "max_steps", "lr"} & set(fake_train[-1])  # preset's


def test_resume_with_more_steps_passes_through(capsys, tmp_path, fake_train):
    out = tmp_path / "o"
    out.mkdir()
    torch.save({k: {} for k in cli.CHECKPOINT_KEYS}, out / CHECKPOINT_NAME)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", out, "--resume", "--steps", "12")
    assert code == 0, err
    assert fake_train[-1]["resume"] is True and fake_train[-1]["max_steps"] == 12


def test_own_data_reaches_prepare(capsys, tmp_path, monkeypatch, fake_train, gpt2_dir):
    "--data is read with read_texts and prepared with texts= and tokenizer=, then passed as data=."
    from scratchformers import data
    calls = {}
    monkeypatch.setattr(data, "read_texts", lambda path: calls.setdefault("read", [path]) and ["a b", "c d"],
                        raising=False)
    monkeypatch.setattr(data, "prepare_gpt2_data", lambda scale, **kw: calls.setdefault("prepare", (scale, kw)) and "DATA")
    corpus = tmp_path / "my.txt"
    corpus.write_text(TEXT)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "o", "--data", corpus,
                            "--tokenizer", gpt2_dir, "--seed", "3")
    assert code == 0, err
    scale, kw = calls["prepare"]
    assert calls["read"] == [corpus] and scale == GPT2_PRESETS["tiny"].data
    assert kw["texts"] == ["a b", "c d"] and kw["seed"] == 3 and kw["tokenizer"].get_vocab_size() > 0
    assert fake_train[-1]["data"] == "DATA"


# --- --config -------------------------------------------------------------------------------------------------

def test_config_file_sets_options_and_flags_win(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "tiny"\nlr = 3e-4\nbatch-size = 4\nno_progress = true\nsteps = 7\n')
    args = parse_args(build_parser(), ["train-gpt2", "--config", str(toml), "--lr", "1e-3"])
    assert (args.preset, args.lr, args.batch_size, args.no_progress, args.steps) == ("tiny", 1e-3, 4, True, 7)
    js = tmp_path / "gen.json"
    js.write_text(json.dumps({"model-dir": "somewhere", "temperature": 0.5, "top_k": 5}))
    args = parse_args(build_parser(), ["generate", "--config", str(js)])
    assert (args.model_dir, args.temperature, args.top_k) == (Path("somewhere"), 0.5, 5)


@pytest.mark.parametrize("text, suffix, message", [
    ("lr = -1\n", ".toml", "'-1' is not a positive number"),
    ("learning_rate = 1e-3\n", ".toml", "unknown option 'learning_rate'"),
    ('preset = "huge"\n', ".toml", "invalid choice: 'huge'"),
    ("resume = 1\n", ".toml", "resume must be true or false"),
    ("lr = \n", ".toml", "is not valid TOML"),
    ("[1, 2]", ".json", "must hold a table of options"),
    ("lr: 1", ".yaml", "use a .toml or .json file"),
])
def test_bad_config_files(capsys, tmp_path, text, suffix, message):
    f = tmp_path / f"c{suffix}"
    f.write_text(text)
    code, _, err = run_main(capsys, "train-gpt2", "--config", f)
    one_line_error(code, err, message)
    code, _, err = run_main(capsys, "train-gpt2", "--config", tmp_path / "missing.toml")
    one_line_error(code, err, "no such file")


# --- user errors: one line, no traceback -------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train-gpt2", "--lr", "0"], "--lr: '0' is not a positive number"),
    (["train-gpt2", "--lr", "-3e-4"], "--lr"),
    (["pretrain-bert", "--steps", "0"], "--steps: '0' is not a positive integer"),
    (["pretrain-bert", "--steps", "ten"], "--steps: 'ten' is not a positive integer"),
    (["train-gpt2", "--preset", "huge"], "invalid choice: 'huge'"),
    (["train-gpt2", "--precision", "fp16"], "use bf16"),
    (["train-gpt2", "--precision", "int8"], "use one of auto, fp32, bf16"),
    (["train-gpt2", "--stop-after", "0"], "--stop-after: '0' is not a number of steps >= 1"),
    (["train-gpt2", "--device", "gpu"], "'gpu' is not a device: use auto, cpu, cuda or cuda:N"),
    (["train-gpt2", "--checkpoint-minutes", "-1"], "--checkpoint-minutes"),
    (["generate"], "--model-dir"),
    (["generate", "--model-dir", "x", "--temperature", "0"], "--temperature"),
    (["generate", "--model-dir", "x", "--temperature", "1e-30"], "use --greedy"),
    (["generate", "--model-dir", "x", "--temperature", "1e30"], "uniform noise"),
    (["generate", "--model-dir", "x", "--top-p", "1.5"], "--top-p"),
    (["finetune", "--model-dir", "x", "--lr", "0"], "--lr"),
])
def test_bad_arguments(capsys, argv, message):
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    one_line_error(code, err, message)


def test_generate_errors(capsys, tmp_path, gpt2_dir):
    code, _, err = run_main(capsys, "generate", "--model-dir", gpt2_dir, "--prompt", "word " * 40)
    one_line_error(code, err, "n_positions=32")  # the prompt is longer than the context
    code, _, err = run_main(capsys, "generate", "--model-dir", gpt2_dir, "--prompt", "hello", "--max-new-tokens", "100")
    one_line_error(code, err, "at most")
    code, _, err = run_main(capsys, "generate", "--model-dir", tmp_path / "missing")
    one_line_error(code, err, "does not exist")


def test_corrupt_tokenizer(capsys, model_copy):
    (model_copy / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    code, _, err = run_main(capsys, "generate", "--model-dir", model_copy)
    one_line_error(code, err, "tokenizer.json")


def test_mismatched_tokenizer(capsys, model_copy):
    from scratchformers.tokenization import save_tokenizer, train_bytelevel_bpe
    save_tokenizer(train_bytelevel_bpe(TEXT.split("\n\n"), vocab_size=300, show_progress=False), model_copy)
    code, _, err = run_main(capsys, "generate", "--model-dir", model_copy)
    one_line_error(code, err, "the tokenizer has 300 tokens", "vocab_size is 600")


def test_classifier_given_to_generate(capsys, model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config.update(architectures=["GPT2ForSequenceClassification"], num_labels=2)
    (model_copy / "config.json").write_text(json.dumps(config))
    code, _, err = run_main(capsys, "generate", "--model-dir", model_copy)
    one_line_error(code, err, "classifier", "scratchformers classify")


def test_unusable_output_and_cache_dirs(capsys, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    run = ["train-gpt2", "--preset", "tiny"]
    code, _, err = run_main(capsys, *run, "--output-dir", a_file)
    one_line_error(code, err, "--output-dir", "is a file")
    code, _, err = run_main(capsys, *run, "--output-dir", a_file / "sub" / "dir")
    one_line_error(code, err, "lies under", "which is a file")
    code, _, err = run_main(capsys, *run, "--output-dir", tmp_path / "out", "--cache-dir", a_file)
    one_line_error(code, err, "--cache-dir", "is a file")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = cli.os.access  # root may write anywhere: pretend this directory is read-only
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    code, _, err = run_main(capsys, *run, "--output-dir", locked / "run")
    one_line_error(code, err, "not writable")
    code, _, err = run_main(capsys, *run, "--output-dir", tmp_path / "out", "--cache-dir", locked)
    one_line_error(code, err, "--cache-dir", "not writable")


@pytest.mark.parametrize("content, message", [
    ({"foo": 1}, "not a scratchformers training checkpoint"),
    (b"not a checkpoint at all", "cannot read the checkpoint"),
])
def test_bad_checkpoint_on_resume(capsys, tmp_path, content, message):
    out = tmp_path / "run"
    out.mkdir()
    if isinstance(content, bytes): (out / CHECKPOINT_NAME).write_bytes(content)
    else: torch.save(content, out / CHECKPOINT_NAME)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", out, "--resume")
    one_line_error(code, err, message)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "fresh", "--resume")
    one_line_error(code, err, "no checkpoint")


def test_data_errors_before_anything_runs(capsys, tmp_path):
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "o",
                            "--data", tmp_path / "missing.txt")
    one_line_error(code, err, "--data", "no such file")
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "o",
                            "--tokenizer", tmp_path)
    one_line_error(code, err, "--tokenizer goes with --data")


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("blank.txt", "\n\n  \n"),
                                           ("notext.jsonl", '{"body": "a review"}\n{"body": "another"}\n')])
def test_unusable_data_files(capsys, tmp_path, name, content):
    "Needs scratchformers.data.read_texts (helper 'data')."
    f = tmp_path / name
    f.write_text(content)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "o", "--data", f)
    one_line_error(code, err, name)


def test_cuda_asked_for_without_a_gpu(capsys, tmp_path, cache):
    if torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--device", "cuda", "--output-dir",
                            tmp_path / "o", "--cache-dir", cache, "--no-progress")
    one_line_error(code, err, "no CUDA GPU")


def test_a_bug_shows_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def broken(args): raise RuntimeError("an internal inconsistency")
    monkeypatch.setitem(cli.COMMANDS, "generate", broken)
    code, _, err = run_main(capsys, "generate", "--model-dir", "x")
    assert code == 1 and "Traceback" in err and "RuntimeError: an internal inconsistency" in err
    assert "bug" in err.splitlines()[-1] and "report" in err.splitlines()[-1]


def test_missing_train_extra_is_a_user_error(capsys, monkeypatch):
    def needs_datasets(args): raise ModuleNotFoundError("No module named 'datasets'", name="datasets")
    monkeypatch.setitem(cli.COMMANDS, "train-gpt2", needs_datasets)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny")
    one_line_error(code, err, 'pip install "scratchformers[train]"')


@pytest.mark.parametrize("checkpoint", ["runs/x/checkpoint.pt", None])
def test_interrupt_hint_only_with_a_checkpoint(capsys, monkeypatch, checkpoint):
    def interrupted(args):
        e = KeyboardInterrupt()
        e.checkpoint = checkpoint  # what training.TrainingInterrupted carries
        raise e
    monkeypatch.setitem(cli.COMMANDS, "train-gpt2", interrupted)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny")
    assert code == 130 and "Traceback" not in err
    assert ("--resume" in err and checkpoint in err) if checkpoint else ("nothing to resume" in err and "--resume" not in err)


def test_ctrl_c_during_training_leaves_a_run_to_resume(capsys, tmp_path, cache, monkeypatch):
    "SIGINT at the third step of a run that checkpoints only at the end (needs helper 'training''s interrupt work)."
    from scratchformers import training
    real, calls = training.forward_backward, []
    def forward_backward(*args, **kw):
        calls.append(1)
        if len(calls) == 3: os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)
    monkeypatch.setattr(training, "forward_backward", forward_backward)
    run = ["train-gpt2", "--preset", "tiny", "--output-dir", tmp_path / "run", "--cache-dir", cache, "--no-progress"]
    code, _, err = run_main(capsys, *run)
    assert code == 130 and "Traceback" not in err and "--resume" in err, err
    monkeypatch.setattr(training, "forward_backward", real)
    code, _, err = run_main(capsys, *run, "--resume")
    assert code == 0, err


# --- fine-tuning and classifying -------------------------------------------------------------------------

@pytest.fixture
def fake_classification(monkeypatch):
    "A stand-in scratchformers.classification that records its calls."
    calls = []
    mod = types.ModuleType("scratchformers.classification")
    mod.FINETUNE_PRESETS = {"tiny": None, "pocket": None, "full": None}
    def finetune(model_dir, preset="pocket", output_dir=None, **kw):
        calls.append(("finetune", model_dir, preset, output_dir, kw))
        return types.SimpleNamespace(accuracy=0.75, history={})
    def classify(model_dir, texts):
        calls.append(("classify", model_dir, list(texts)))
        return [("positive", 0.9), ("negative", 0.8)][:len(texts)]
    mod.finetune, mod.classify = finetune, classify
    monkeypatch.setitem(sys.modules, "scratchformers.classification", mod)
    return calls


def test_finetune_and_classify_wiring(capsys, tmp_path, monkeypatch, fake_classification):
    code, out, err = run_main(capsys, "finetune", "--model-dir", tmp_path / "bert", "--preset", "tiny",
                              "--epochs", "2", "--lr", "1e-4", "--max-length", "64", "--no-progress")
    assert code == 0, err
    name, model_dir, preset, output_dir, kw = fake_classification[-1]
    assert (model_dir, preset, output_dir) == (tmp_path / "bert", "tiny", tmp_path / "bert-sentiment")
    assert kw == dict(epochs=2, lr=1e-4, max_length=64, progress=False, cache_dir=None)
    assert run_main(capsys, "finetune", "--model-dir", tmp_path / "bert", "--seed", "7")[0] == 0
    assert fake_classification[-1][4]["seed"] == 7
    assert "0.7500" in out
    code, out, err = run_main(capsys, "classify", "--model-dir", tmp_path / "c", "--text", "Great.", "--text", "Bad.")
    assert code == 0, err
    assert out.splitlines() == ["positive\t0.9000\tGreat.", "negative\t0.8000\tBad."]
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("Loved it.\n\nHated it.\n"))
    code, out, err = run_main(capsys, "classify", "--model-dir", tmp_path / "c")
    assert code == 0 and fake_classification[-1][2] == ["Loved it.", "Hated it."]
    code, _, err = run_main(capsys, "finetune", "--model-dir", tmp_path / "bert", "--preset", "huge")
    one_line_error(code, err, "invalid choice: 'huge'")


@pytest.mark.parametrize("kind, train", [("bert", "pretrain-bert"), ("gpt2", "train-gpt2")])
def test_pretrain_finetune_classify(capsys, tmp_path, cache, kind, train):
    "Issue 10's command chain, tiny (needs scratchformers.classification from helper 'classify')."
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_main(capsys, train, "--preset", "tiny", "--output-dir", a, "--cache-dir", cache, "--no-progress")[0] == 0
    code, out, err = run_main(capsys, "finetune", "--model-dir", a, "--preset", "tiny", "--output-dir", b,
                              "--cache-dir", cache, "--no-progress")
    assert code == 0, err
    code, out, err = run_main(capsys, "classify", "--model-dir", b, "--text", "A wonderful film.", "--text", "Awful.")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(0.5 <= float(l.split("\t")[1]) <= 1 for l in lines)
    code, _, err = run_main(capsys, "generate", "--model-dir", b)
    one_line_error(code, err)


# --- own text, precision and stop/resume, end to end (need the training and data work merged) --------------

def test_train_gpt2_on_own_text(capsys, tmp_path, cache):
    transformers = pytest.importorskip("transformers")
    corpus, out = tmp_path / "my.txt", tmp_path / "run"
    corpus.write_text(TEXT)
    code, _, err = run_main(capsys, "train-gpt2", "--preset", "tiny", "--data", corpus, "--output-dir", out,
                            "--cache-dir", cache, "--no-progress")
    assert code == 0, err
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "history.json", "metrics.jsonl", "loss.png", "tokenizer.json"} <= files, files
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|endoftext|>"
    code, _, err = run_main(capsys, "generate", "--model-dir", out, "--prompt", "The film", "--max-new-tokens", "4")
    assert code == 0, err


def test_stop_after_then_resume_equals_one_run(capsys, tmp_path, cache):
    "--precision fp32 --stop-after 2, then --resume, ends at the loss of an uninterrupted run, bit for bit."
    run = ["train-gpt2", "--preset", "tiny", "--precision", "fp32", "--cache-dir", cache, "--no-progress"]
    assert run_main(capsys, *run, "--output-dir", tmp_path / "whole")[0] == 0
    code, out, err = run_main(capsys, *run, "--output-dir", tmp_path / "split", "--stop-after", "2")
    assert code == 0 and "--resume" in out, err
    assert run_main(capsys, *run, "--output-dir", tmp_path / "split", "--resume")[0] == 0
    whole, split = (json.loads((tmp_path / d / "history.json").read_text())["train"] for d in ("whole", "split"))
    assert [r["loss"] for r in whole] == [r["loss"] for r in split]
