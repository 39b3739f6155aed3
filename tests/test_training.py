"""The training loop: exact resume, checkpoints, compiled models, divergence, bad settings, several processes."""
import json
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
    return GPT2LMHeadModel(GPT2Config.pocket(vocab_size=vocab_size, n_layer=2, n_embd=32, n_head=2, n_positions=32, **kw))


def tiny_bert(vocab_size=600, seed=0):
    torch.manual_seed(seed)
    return BertForPreTraining(BertConfig.pocket(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=32))


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
        bigger = GPT2LMHeadModel(GPT2Config.pocket(vocab_size=600, n_layer=3, n_embd=32, n_head=2, n_positions=32))
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
        model = GPT2LMHeadModel(GPT2Config.pocket(vocab_size=50, n_layer=2, n_embd=32, n_head=2, n_positions=16,
                                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
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
