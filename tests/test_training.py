"""The training loop: exact resume, checkpoints, compiled models, divergence, bad settings, several processes."""
import json
import math
import os
import runpy
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from scratchformers.bert import BertConfig, BertForPreTraining
from scratchformers.data import prepare_bert_data, prepare_gpt2_data
from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel
from scratchformers.training import (CHECKPOINT_NAME, TINY_SCALE, TrainConfig, TrainingDiverged,
                                     decay_split, lr_factor, pretrain_bert, read_checkpoint, save_trained, train)

NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
RUN_FILES = sorted([CHECKPOINT_NAME, "history.json", "metrics.jsonl", "run_config.json"])  # a run without evaluations


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def bert_data(cache):
    return prepare_bert_data(TINY_SCALE, cache_dir=cache)


@pytest.fixture(scope="module")
def gpt2_data(cache):
    return prepare_gpt2_data(TINY_SCALE, cache_dir=cache)


def tiny_gpt2(vocab_size=600, seed=0, **kw):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config.tiny(vocab_size=vocab_size, **kw))


def tiny_bert(vocab_size=600, seed=0):
    torch.manual_seed(seed)
    return BertForPreTraining(BertConfig.tiny(vocab_size=vocab_size))


def losses(result):
    return [r["loss"] for r in result.history["train"]]


# --- settings -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, word", [(dict(lr=0), "lr"), (dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"),
                                       (dict(max_steps=0), "max_steps"), (dict(max_steps=-3), "max_steps"),
                                       (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"),
                                       (dict(grad_accum_steps=0), "grad_accum_steps"), (dict(warmup_ratio=1.0), "warmup_ratio"),
                                       (dict(clip_grad_norm=0), "clip_grad_norm"), (dict(max_steps=2.5), "max_steps")])
def test_config_refuses_bad_values(bad, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**bad)


def test_weight_decay_only_on_matrices():
    for model in (tiny_gpt2(), tiny_bert()):
        decay, no_decay = decay_split(model)
        params = dict(model.named_parameters())
        assert all(params[n].ndim == 2 for n in decay)
        assert not any("wte" in n or "wpe" in n or "embeddings" in n for n in decay)
        assert len(decay) + len(no_decay) == len(params)


def test_schedule_warms_up_then_decays():
    f = [lr_factor(s, 10, 100, 0.1) for s in range(100)]
    assert f[9] == 1.0 and f[0] == 0.1 and min(f) > 0.1 - 1e-12 and f[-1] < 0.11
    assert f == sorted(f[:10]) + sorted(f[10:], reverse=True)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*pocket, full, tiny"):
        pretrain_bert("huge")


def test_data_too_small_for_a_step(gpt2_data):
    with pytest.raises(ValueError, match="too small"):
        train(tiny_gpt2(), gpt2_data.train.select(range(3)), TrainConfig(batch_size=4, progress=False),
              collate_fn=gpt2_data.collate)


# --- exact resume ---------------------------------------------------------------------------------------

class Crash(Exception):
    pass


class crash_after:
    "Wraps a collate function (and its set_epoch, state_dict...) to raise on call n_batches + 1: a crash mid-run."
    def __init__(self, collate, n_batches):
        self.collate, self.n_batches, self.calls = collate, n_batches, 0
        for name in ("set_epoch", "state_dict", "load_state_dict"):
            if hasattr(collate, name): setattr(self, name, getattr(collate, name))

    def __call__(self, examples):
        self.calls += 1
        if self.calls > self.n_batches: raise Crash
        return self.collate(examples)


class WithoutState:
    "A seeded collator that can't save its random state (set_epoch but no state_dict): resuming must replay it."
    def __init__(self, collate): self.collate, self.set_epoch = collate, collate.set_epoch
    def __call__(self, examples): return self.collate(examples)


def test_gpt2_resume_is_exact_across_epochs(gpt2_data, tmp_path):
    data = gpt2_data.train.select(range(48))  # 6 steps of 2 x 4 windows per epoch: 20 steps span 4 epochs
    cfg = TrainConfig(lr=3e-3, max_steps=20, batch_size=4, grad_accum_steps=2, warmup_steps=3, progress=False,
                      out_dir=str(tmp_path), save_every=10)
    straight = train(tiny_gpt2(), data, TrainConfig(**{**asdict(cfg), "out_dir": None}), collate_fn=gpt2_data.collate)
    with pytest.raises(Crash):
        train(tiny_gpt2(), data, cfg, collate_fn=crash_after(gpt2_data.collate, 23))  # dies in step 12
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["state"]["step"] == 10
    resumed = train(tiny_gpt2(seed=99), data, cfg, collate_fn=gpt2_data.collate, resume=True)
    assert losses(resumed) == losses(straight)  # identical, not close
    assert resumed.state.epoch == straight.state.epoch
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("collator_state", ["state_dict", "replayed"])
def test_bert_resume_is_exact_with_seeded_masks(bert_data, tmp_path, collator_state):
    "BERT with the MLM collator: dropout, masks and NSP, resumed in the middle of an epoch."
    wrap = (lambda c: c) if collator_state == "state_dict" else WithoutState
    cfg = TrainConfig(lr=1e-3, max_steps=20, batch_size=8, warmup_steps=2, progress=False, out_dir=str(tmp_path),
                      save_every=10)
    kw = dict(model_kwargs={"labelled_only": True})
    straight = train(tiny_bert(), bert_data.train, TrainConfig(**{**asdict(cfg), "out_dir": None}),
                     collate_fn=wrap(bert_data.collator), **kw)
    with pytest.raises(Crash):
        train(tiny_bert(), bert_data.train, cfg, collate_fn=crash_after(wrap(bert_data.collator), 13), **kw)
    assert (read_checkpoint(tmp_path / CHECKPOINT_NAME)["collator"] is None) == (collator_state == "replayed")
    fresh_collator = type(bert_data.collator)(bert_data.tokenizer)  # a new process has a new collator
    resumed = train(tiny_bert(seed=5), bert_data.train, cfg, collate_fn=wrap(fresh_collator), resume=True, **kw)
    assert losses(resumed) == losses(straight)


def test_resume_refuses_a_different_run(gpt2_data, tmp_path):
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, progress=False, out_dir=str(tmp_path))
    train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    with pytest.raises(ValueError, match=r"lr: 0.001 in the checkpoint, 0.002 now"):
        train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(cfg), "lr": 2e-3}), collate_fn=gpt2_data.collate,
              resume=True)
    with pytest.raises(ValueError, match=r"model n_layer: 2 in the checkpoint, 3 now"):
        torch.manual_seed(0)
        bigger = GPT2LMHeadModel(GPT2Config.tiny(vocab_size=600, n_layer=3))
        train(bigger, gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True)
    # bookkeeping settings may change
    more_evals = TrainConfig(**{**asdict(cfg), "eval_every": 1, "log_every": 1})
    train(tiny_gpt2(), gpt2_data.train, more_evals, collate_fn=gpt2_data.collate, resume=True)


def test_resume_without_a_checkpoint(gpt2_data, tmp_path):
    cfg = TrainConfig(max_steps=2, batch_size=4, progress=False, out_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True)
    with pytest.raises(ValueError, match="out_dir"):
        train(tiny_gpt2(), gpt2_data.train, TrainConfig(max_steps=2, progress=False), collate_fn=gpt2_data.collate,
              resume=True)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=tmp_path / "garbage.pt")


# --- checkpoints on disk ------------------------------------------------------------------------------------

class NanAt(nn.Module):
    "Wraps a model; the loss of forward call number `call` is NaN."
    def __init__(self, model, call):
        super().__init__()
        self.model, self.call, self.calls = model, call, 0

    def forward(self, **batch):
        self.calls += 1
        out = self.model(**batch)
        if self.calls >= self.call: out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_checkpoint(gpt2_data, tmp_path):
    cfg = TrainConfig(lr=1e-3, max_steps=10, batch_size=4, progress=False, out_dir=str(tmp_path), save_every=2)
    model = NanAt(tiny_gpt2(**NO_DROPOUT), call=6)
    with pytest.raises(TrainingDiverged, match=r"step 6: the loss is nan.*checkpoint.*intact"):
        train(model, gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    ckpt = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["state"]["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == RUN_FILES  # no temp files
    reference = train(tiny_gpt2(**NO_DROPOUT), gpt2_data.train, TrainConfig(**{**asdict(cfg), "out_dir": None, "max_steps": 10}),
                      collate_fn=gpt2_data.collate)  # same schedule, so the first 4 steps are the same
    assert [r["loss"] for r in ckpt["state"]["history"]["train"]] == losses(reference)[:4]


def test_failed_save_leaves_previous_checkpoint(gpt2_data, tmp_path, monkeypatch):
    cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=4, progress=False, out_dir=str(tmp_path), save_every=2)
    real_save, saves = torch.save, [0]
    def save_then_die(obj, f, *a, **kw):
        saves[0] += 1
        if saves[0] == 2:  # the second checkpoint: half-written, then the process "dies"
            Path(f).write_bytes(b"\x80\x02half")
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(OSError, match="disk full"):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["state"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == RUN_FILES


def test_compiled_model_saves_plain_names(gpt2_data, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, progress=False, out_dir=str(tmp_path / "run"),
                      compile=True, compile_backend="eager")
    result = train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    ckpt = read_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert not any("_orig_mod" in k for k in ckpt["model"]) and "transformer.wte.weight" in ckpt["model"]
    assert not hasattr(result.model, "_orig_mod")
    save_trained(result, gpt2_data.tokenizer, tmp_path / "model")
    from safetensors import safe_open
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as f:
        assert not any("_orig_mod" in k for k in f.keys())
    transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "model")
    # and the checkpoint resumes into a compiled model
    train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True)


def test_pretrained_bert_loads_in_transformers(cache, tmp_path):
    transformers = pytest.importorskip("transformers")
    result = pretrain_bert("tiny", tmp_path, cache_dir=cache, progress=False, max_steps=3)
    assert {"mlm_accuracy", "nsp_accuracy", "mlm_loss", "nsp_loss", "loss"} <= set(result.final_eval)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    ours = result.model.eval()
    ids = torch.randint(5, ours.config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).prediction_logits, ours(ids).prediction_logits, atol=1e-4, rtol=1e-4)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert tok.convert_tokens_to_ids("[MASK]") == 4
    assert json.loads((tmp_path / "history.json").read_text())["train"][-1]["step"] == 3


# --- several processes ----------------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel
    from scratchformers.training import TrainConfig, train

    def toy(n, seed):
        g = torch.Generator().manual_seed(seed)
        start, stride = torch.randint(0, 50, (n, 1), generator=g), torch.randint(1, 4, (n, 1), generator=g)
        ids = (start + stride * torch.arange(16)) % 50
        return [{"input_ids": x, "labels": x} for x in ids]

    def stack(examples):
        return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}

    def run(batch_size, out_dir):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config.tiny(vocab_size=50, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
                                                attn_pdrop=0.0))
        cfg = TrainConfig(lr=3e-3, max_steps=5, batch_size=batch_size, grad_accum_steps=2, warmup_steps=2,
                          progress=False, out_dir=out_dir, precision="fp32")  # bf16 rounds 2 x 2 and 4 differently
        return train(model, toy(64, 0), cfg, collate_fn=stack, eval_data=toy(16, 1))

    if __name__ == "__main__":
        result = run(int(sys.argv[1]), sys.argv[2])
        if int(os.environ["RANK"]) == 0:
            json.dump({"train": [r["loss"] for r in result.history["train"]], "eval": result.final_eval["loss"]},
                      open(os.path.join(sys.argv[2], "losses.json"), "w"))
        torch.distributed.destroy_process_group()
''')


def test_two_processes_equal_one(tmp_path):
    "torchrun with 2 CPU processes (gloo), 2 x 2 per step, against one process with 4 per step."
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), "2", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = runpy.run_path(str(script))["run"](4, str(tmp_path / "single"))
    ddp = json.loads((tmp_path / "ddp" / "losses.json").read_text())
    assert len(ddp["train"]) == 5
    for step, (a, b) in enumerate(zip(ddp["train"], losses(single)), 1):
        assert abs(a - b) < 1e-5, f"step {step}: 2 processes {a}, 1 process {b}"
    assert abs(ddp["eval"] - single.final_eval["loss"]) < 1e-5
    ckpt = read_checkpoint(tmp_path / "ddp" / CHECKPOINT_NAME)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    single_ckpt = read_checkpoint(tmp_path / "single" / CHECKPOINT_NAME)
    for k, v in single_ckpt["model"].items():
        torch.testing.assert_close(ckpt["model"][k], v, atol=1e-5, rtol=1e-4)


# --- precision ---------------------------------------------------------------------------------------------------

import signal  # noqa: E402

from scratchformers import training  # noqa: E402
from scratchformers.training import (TrainingInterrupted, count_parameters, estimate_run, precision_report,  # noqa: E402
                                     recipe_config, resolve_precision, BERT_PRESETS, GPT2_PRESETS)


def test_precision_names():
    for bad in ("fp16", "float16", "BF16", None):
        with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16.*'bf16'"):
            TrainConfig(precision=bad)
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    expected = "bf16" if training.fast_bf16("cpu") else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision(TrainConfig(precision="auto", device="cpu")) == expected
    assert f"precision auto = {expected}" in precision_report("cpu")


def test_fast_bf16_detection_matches_cpuinfo():
    flags = training._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert training.fast_bf16("cpu") == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_bf16_on_a_slow_cpu_warns_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(training, "fast_bf16", lambda kind: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu", warn=True) == "bf16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "slower than fp32" in err and "'fp32'" in err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_is_used_and_master_weights_stay_fp32(gpt2_data, precision):
    cfg = TrainConfig(lr=1e-3, max_steps=3, batch_size=4, progress=False, precision=precision)
    result = train(tiny_gpt2(**NO_DROPOUT), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    other = "bf16" if precision == "fp32" else "fp32"
    again = train(tiny_gpt2(**NO_DROPOUT), gpt2_data.train, TrainConfig(**{**asdict(cfg), "precision": other}),
                  collate_fn=gpt2_data.collate)
    assert losses(result) != losses(again)  # bf16 autocast really changes the arithmetic
    assert abs(losses(result)[0] - losses(again)[0]) < 0.05  # ... by rounding only


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact_in_both_precisions(gpt2_data, tmp_path, precision):
    cfg = TrainConfig(lr=3e-3, max_steps=8, batch_size=4, grad_accum_steps=2, warmup_steps=2, progress=False,
                      out_dir=str(tmp_path), save_every=4, precision=precision)
    straight = train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(cfg), "out_dir": None}),
                     collate_fn=gpt2_data.collate)
    with pytest.raises(Crash):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=crash_after(gpt2_data.collate, 11))
    ckpt = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["state"]["step"] == 4
    assert all(v.dtype == torch.float32 for s in ckpt["optimizer"]["state"].values()
               for k, v in s.items() if k in ("exp_avg", "exp_avg_sq"))
    resumed = train(tiny_gpt2(seed=3), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True)
    assert losses(resumed) == losses(straight)


# --- stopping and continuing ---------------------------------------------------------------------------------

def test_stop_after_then_resume_equals_one_run(cache, tmp_path, capsys):
    "A tiny GPT-2 recipe run stopped after 3 steps and resumed to the end: the same losses, bit for bit."
    kw = dict(cache_dir=cache, progress=False, max_steps=8, eval_every=4)
    straight = training.train_gpt2("tiny", tmp_path / "straight", **kw)
    part = training.train_gpt2("tiny", tmp_path / "parts", stop_after=3, **kw)
    assert part.stopped == "stop_after" and part.state.step == 3 and not part.finished
    assert "stopped after step 3 of 8" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "parts" / CHECKPOINT_NAME)["state"]["step"] == 3
    rest = training.train_gpt2("tiny", tmp_path / "parts", resume=True, **kw)
    assert rest.finished and losses(rest) == losses(straight)
    assert rest.final_eval["loss"] == straight.final_eval["loss"]


def test_stop_after_must_be_positive():
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="stop_after must be a positive number"):
            TrainConfig(stop_after=bad)
    with pytest.raises(ValueError, match="stop_after_minutes must be a positive"):
        TrainConfig(stop_after_minutes=0)
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        TrainConfig(checkpoint_minutes=-1)


def test_stop_after_minutes(gpt2_data, tmp_path):
    cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=4, progress=False, out_dir=str(tmp_path),
                      stop_after_minutes=1e-9)  # due after the first step
    result = train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    assert result.stopped == "stop_after_minutes" and result.state.step == 1
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["state"]["step"] == 1


def test_checkpoints_by_time(gpt2_data, tmp_path):
    for minutes, expect in ((1e-9, 3), (0, None)):  # every step / never (save_every=0, the run dies first)
        out = tmp_path / str(minutes)
        cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=4, progress=False, out_dir=str(out),
                          checkpoint_minutes=minutes)
        with pytest.raises(Crash):
            train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=crash_after(gpt2_data.collate, 3))
        path = out / CHECKPOINT_NAME
        assert (read_checkpoint(path)["state"]["step"] if path.exists() else None) == expect


class signal_at:
    "A collate function that sends this process `signum` on call n (during a step)."
    def __init__(self, collate, n, signum):
        self.collate, self.n, self.signum, self.calls = collate, n, signum, 0

    def __call__(self, examples):
        self.calls += 1
        if self.calls == self.n: os.kill(os.getpid(), self.signum)
        return self.collate(examples)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_saves_and_resumes_exactly(gpt2_data, tmp_path, signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cfg = TrainConfig(lr=3e-3, max_steps=8, batch_size=4, grad_accum_steps=2, progress=False, out_dir=str(tmp_path))
    straight = train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(cfg), "out_dir": None}),
                     collate_fn=gpt2_data.collate)
    with pytest.raises(TrainingInterrupted, match=r"after step 3 of 8.*continue with resume") as e:
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=signal_at(gpt2_data.collate, 5, signum))  # in step 3
    assert isinstance(e.value, KeyboardInterrupt) and e.value.checkpoint == tmp_path / CHECKPOINT_NAME
    assert read_checkpoint(e.value.checkpoint)["state"]["step"] == 3
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are restored
    resumed = train(tiny_gpt2(seed=4), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True)
    assert losses(resumed) == losses(straight)


def test_signal_without_out_dir_has_no_checkpoint(gpt2_data):
    cfg = TrainConfig(lr=1e-3, max_steps=5, batch_size=4, progress=False)
    with pytest.raises(TrainingInterrupted, match="no checkpoint was written") as e:
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=signal_at(gpt2_data.collate, 1, signal.SIGINT))
    assert e.value.checkpoint is None


def test_out_dir_is_checked_before_training(gpt2_data, tmp_path, cache):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, match in ((a_file, "is a file"), (a_file / "run", "lies under .*file, which is a file"),
                       ("/proc/scratchformers-run", "cannot write to the output directory")):
        with pytest.raises(OSError, match=match):
            train(tiny_gpt2(), gpt2_data.train, TrainConfig(max_steps=2, batch_size=4, progress=False, out_dir=out),
                  collate_fn=gpt2_data.collate)
        with pytest.raises(OSError, match=match):  # the recipes check before preparing any data
            training.train_gpt2("tiny", out, cache_dir=tmp_path / "no-cache-yet", progress=False)
    assert not (tmp_path / "no-cache-yet").exists()


def test_resume_checks_the_data_digest(gpt2_data, tmp_path):
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, progress=False, out_dir=str(tmp_path))
    train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, data_digest="aaaa1111")
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["data_digest"] == "aaaa1111"
    with pytest.raises(ValueError, match="data digest.*aaaa1111 in the checkpoint, bbbb2222 now"):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, data_digest="bbbb2222", resume=True)
    train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, data_digest="aaaa1111", resume=True)


def test_old_checkpoints_still_resume(gpt2_data, tmp_path):
    "A checkpoint written before precision, stop_after... existed (mixed_precision instead) still resumes."
    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=4, progress=False, out_dir=str(tmp_path), save_every=2)
    with pytest.raises(Crash):
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=crash_after(gpt2_data.collate, 3))
    path = tmp_path / CHECKPOINT_NAME
    ckpt = read_checkpoint(path)
    for k in ("precision", "stop_after", "stop_after_minutes", "checkpoint_minutes"):
        del ckpt["train_config"][k]
    ckpt["train_config"]["mixed_precision"] = True
    del ckpt["state"]["plan"], ckpt["data_digest"]
    torch.save(ckpt, path)
    assert train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate, resume=True).state.step == 4


def test_epochs_replace_a_preset_step_count(capsys):
    cfg = recipe_config(GPT2_PRESETS["pocket"], None, {"epochs": 2}, "preset 'pocket'")
    assert cfg.max_steps is None and cfg.epochs == 2
    assert "epochs=2 replaces preset 'pocket''s max_steps=1000" in capsys.readouterr().out
    with pytest.raises(ValueError, match="both max_steps=10 and epochs=2"):
        recipe_config(GPT2_PRESETS["pocket"], None, {"epochs": 2, "max_steps": 10})
    assert recipe_config(GPT2_PRESETS["pocket"], None, {"epochs": None}).max_steps == 1000  # not given
    assert recipe_config(BERT_PRESETS["pocket"], None, {"epochs": 3}).epochs == 3  # BERT's pocket counts epochs


def test_warmup_longer_than_the_run_is_clamped(gpt2_data, capsys):
    cfg = TrainConfig(lr=1e-3, max_steps=10, warmup_steps=50, batch_size=4, progress=False)
    result = train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    assert "a warm-up of 50 steps does not fit in a run of 10 steps; it is clamped to 1 steps" in capsys.readouterr().out
    lrs = [r["lr"] for r in result.history["train"]]
    assert lrs[0] == cfg.lr and lrs == sorted(lrs, reverse=True)


# --- runs you can watch ------------------------------------------------------------------------------------------

def test_run_records(cache, tmp_path, capsys):
    out = tmp_path / "run"
    result = training.train_gpt2("tiny", out, cache_dir=cache, progress=False, max_steps=6, eval_every=3)
    printed = capsys.readouterr().out
    assert printed.count("  validation  ") == 2 and "perplexity" in printed  # progress=False still shows evaluations
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert abs(evals[-1]["perplexity"] - math.exp(evals[-1]["loss"])) < 1e-9 * evals[-1]["perplexity"]
    assert evals[-1]["seconds"] >= records[-2]["seconds"] and result.state.seconds == evals[-1]["seconds"]
    assert json.loads((out / "history.json").read_text()) == json.loads(json.dumps(result.history))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["train_config"]["max_steps"] == 6 and run_config["model_config"]["n_layer"] == 2
    assert run_config["precision"] in ("fp32", "bf16") and run_config["total_steps"] == 6
    training.train_gpt2("tiny", out, cache_dir=cache, progress=False, max_steps=2, eval_every=3)
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["event", "train", "train", "eval"]  # a fresh run in the same directory starts a new file


def test_history_is_current_at_each_evaluation(gpt2_data, tmp_path):
    cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=4, progress=False, out_dir=str(tmp_path), eval_every=2)
    with pytest.raises(Crash):  # dies in step 5, after the evaluation at step 4
        train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=crash_after(gpt2_data.collate, 4),
              eval_data=gpt2_data.validation.select(range(8)), eval_collate_fn=gpt2_data.collate)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["step"] for r in history["eval"]] == [2, 4] and len(history["train"]) == 4
    assert (tmp_path / "loss.png").is_file()


def test_a_finished_run_can_be_extended(gpt2_data, tmp_path, capsys):
    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=4, warmup_steps=1, progress=False, out_dir=str(tmp_path / "a"))
    train(tiny_gpt2(), gpt2_data.train, cfg, collate_fn=gpt2_data.collate)
    longer = TrainConfig(**{**asdict(cfg), "max_steps": 8})
    extended = train(tiny_gpt2(), gpt2_data.train, longer, collate_fn=gpt2_data.collate, resume=True)
    assert "re-planned: the run now ends at step 8 instead of 4" in capsys.readouterr().out
    lrs = [r["lr"] for r in extended.history["train"]]
    assert len(lrs) == 8 and all(abs(lr - cfg.lr * cfg.min_lr_ratio) < 1e-12 for lr in lrs[4:])  # it had decayed
    assert read_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["state"]["plan"] == [[0, 4], [4, 8]]
    # extending a running plan, stopped and resumed in between, is itself exactly resumable
    cfg_b = TrainConfig(**{**asdict(cfg), "out_dir": str(tmp_path / "b"), "stop_after": 2})
    train(tiny_gpt2(), gpt2_data.train, cfg_b, collate_fn=gpt2_data.collate)  # steps 1-2 of 4
    ext = TrainConfig(**{**asdict(cfg_b), "max_steps": 8})
    part = train(tiny_gpt2(), gpt2_data.train, ext, collate_fn=gpt2_data.collate, resume=True)  # steps 3-4 of 8
    rest = train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(ext), "stop_after": None}),
                 collate_fn=gpt2_data.collate, resume=True)
    lr = [r["lr"] for r in rest.history["train"]]
    assert part.state.step == 4 and lr[2] > lr[3] > lr[7] and lr == sorted(lr, reverse=True)  # decays on
    cfg_c = TrainConfig(**{**asdict(ext), "out_dir": str(tmp_path / "c"), "stop_after": None, "max_steps": 4})
    train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(cfg_c), "stop_after": 2}), collate_fn=gpt2_data.collate)
    straight = train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(cfg_c), "max_steps": 8}),
                     collate_fn=gpt2_data.collate, resume=True)
    assert losses(straight) == losses(rest)
    capsys.readouterr()
    shorter = train(tiny_gpt2(), gpt2_data.train, TrainConfig(**{**asdict(ext), "max_steps": 3}),
                    collate_fn=gpt2_data.collate, resume=True)  # a plan is never shortened, and that is said
    assert "plans 8 steps; the 3 asked for now are fewer, so the run continues to step 8" in capsys.readouterr().out
    assert shorter.total_steps == 8 and shorter.finished and len(shorter.history["train"]) == 8


# --- estimates -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, preset", [("gpt2", "pocket"), ("gpt2", "small"), ("bert", "pocket"), ("bert", "base")])
def test_estimate_counts_the_real_parameters(family, preset):
    config = getattr(GPT2Config if family == "gpt2" else BertConfig, preset)(
        **({"vocab_size": 8192} if preset == "pocket" else {}))
    with torch.device("meta"):  # the real modules, no memory
        model = (GPT2LMHeadModel if family == "gpt2" else BertForPreTraining)(config)
    real = sum(p.numel() for p in model.parameters())
    assert count_parameters(config) == real
    est = estimate_run(config, TrainConfig(batch_size=4, precision="fp32"), seq_len=128, total_steps=10,
                       tokens_per_s=1000.0)
    assert est.parameters == real and est.optimizer_bytes == 8 * real and est.gradient_bytes == 4 * real
    assert est.tokens == 10 * 4 * 128 and est.seconds == est.tokens / 1000.0 and est.activation_bytes > 0
    assert f"{real / 1e6:.1f}M parameters" in str(est)
    bf16 = estimate_run(config, TrainConfig(batch_size=4, precision="bf16"), seq_len=128)
    assert bf16.activation_bytes < est.activation_bytes and bf16.seconds is None


# --- the full presets, two steps on CPU ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_full_preset_takes_two_steps_on_cpu(family, tmp_path, capsys):
    """Two optimizer steps of the `full` recipe through the same code path a GPU run takes (device and precision
    aside): BERT-base on the pretraining data of all of IMDb's training reviews, GPT-2 small on windows of 1024
    tokens. The data come from the shared cache (~/.cache/scratchformers): measured on the 2-core build machine,
    building them the first time takes about 3 minutes for BERT and 2 for GPT-2, later runs load them in seconds.
    The presets' batches are too slow for CI on a CPU, so this test makes them smaller (the same models, context
    and code, less arithmetic): BERT-base's 32 pairs took ~45 s a step on one thread here (two steps ~90 s), the
    test uses 8; GPT-2 small's 8 windows x 4 accumulated micro-batches of 1024 tokens (32,768 tokens a step) would
    take minutes a step, the test uses 1 window and no accumulation (~50-70 s a step here, measured while seven
    jobs shared the two cores; far less on a machine of its own). Evaluation reads the first 4 validation
    examples instead of thousands, for the same reason."""
    import dataclasses
    data = (prepare_bert_data if family == "bert" else prepare_gpt2_data)("full")
    data = dataclasses.replace(data, validation=data.validation.select(range(4)))
    overrides = dict(max_steps=2, progress=False, log_every=1, device="cpu", checkpoint_minutes=0)
    overrides.update(batch_size=8) if family == "bert" else overrides.update(batch_size=1, grad_accum_steps=1)
    run = training.pretrain_bert if family == "bert" else training.train_gpt2
    result = run("full", tmp_path / "run", data=data, **overrides)
    assert result.finished and result.state.step == 2 and all(math.isfinite(x) for x in losses(result))
    assert math.isfinite(result.final_eval["loss"])
    config = result.model.config
    if family == "bert":
        assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (768, 12, 30522)
    else:
        assert (config.n_embd, config.n_layer, config.n_positions) == (768, 12, 1024)
        assert len(data.train[0]["input_ids"]) == 1024
    printed = capsys.readouterr().out
    assert f"{count_parameters(config) / 1e6:.1f}M parameters; memory about" in printed  # the estimate came first
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / CHECKPOINT_NAME).is_file()
    import shutil
    shutil.rmtree(tmp_path / "run")  # ~2 GB of weights and optimizer state: don't leave them in pytest's temp dirs
