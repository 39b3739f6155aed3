"""scratchformers.weights: atomic writes, strict loading with clear errors, config round trips."""
import json
import os
import stat
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import scratchformers.weights as W
from scratchformers.bert import BertConfig, BertForPreTraining
from scratchformers.weights import (CheckpointError, ConfigMixin, PreTrainedModel, atomic_save, atomic_write_bytes,
                                    atomic_write_text, load_hf_state_dict)


@dataclass
class ToyConfig(ConfigMixin):
    model_type: ClassVar[str] = "toy"
    hf_fixed: ClassVar[dict] = {"tie_word_embeddings": True}
    vocab_size: int = 7
    hidden_size: int = 4


class Toy(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.out.weight = self.emb.weight


@pytest.fixture
def saved(tmp_path):
    toy = Toy(ToyConfig())
    return toy, toy.save_pretrained(tmp_path / "toy")


def _files(d):
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------- atomic writes
def test_atomic_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        atomic_save({"step": 2, "bad": lambda: None}, path)  # unpicklable: fails mid-write
    assert torch.load(path)["step"] == 1
    assert _files(tmp_path) == ["ckpt.pt"], "a temporary file was left behind"


def test_atomic_write_text_and_bytes(tmp_path):
    p = atomic_write_text("héllo", tmp_path / "sub" / "a.txt")
    assert p.read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(b"new", p)
    assert p.read_bytes() == b"new"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # usual permissions, not mkstemp's 0600


def test_failing_save_pretrained_keeps_previous_weights(tmp_path, monkeypatch):
    toy = Toy(ToyConfig())
    d = toy.save_pretrained(tmp_path / "m")
    before = load_file(d / "model.safetensors")

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(W, "save_file", broken_save_file)
    with torch.no_grad():
        toy.proj.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        toy.save_pretrained(d)
    after = load_file(d / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert _files(d) == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------- round trips
def test_round_trip_tied_stored_once(saved):
    toy, d = saved
    assert _files(d) == ["config.json", "model.safetensors"]
    assert set(load_file(d / "model.safetensors")) == {"emb.weight", "proj.weight", "proj.bias"}
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "toy" and cfg["architectures"] == ["Toy"] and cfg["tie_word_embeddings"] is True
    back = Toy.from_pretrained(d)
    assert not back.training and back.out.weight is back.emb.weight
    assert all(torch.equal(a, b) for a, b in zip(toy.state_dict().values(), back.state_dict().values()))


def test_bin_and_sharded_formats(saved, tmp_path):
    toy, d = saved
    sd = load_file(d / "model.safetensors")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((d / "config.json").read_text())
    torch.save(sd, bin_dir / "pytorch_model.bin")
    assert torch.equal(Toy.from_pretrained(bin_dir).proj.weight, toy.proj.weight)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((d / "config.json").read_text())
    save_file({"emb.weight": sd["emb.weight"]}, shard_dir / "a.safetensors")
    save_file({k: sd[k] for k in ("proj.weight", "proj.bias")}, shard_dir / "b.safetensors")
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "emb.weight": "a.safetensors", "proj.weight": "b.safetensors", "proj.bias": "b.safetensors"}}))
    assert torch.equal(Toy.from_pretrained(shard_dir).emb.weight, toy.emb.weight)
    (shard_dir / "b.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="b.safetensors"):
        Toy.from_pretrained(shard_dir)


def test_overrides(saved):
    _, d = saved
    with pytest.raises(TypeError, match="hiden_size"):
        Toy.from_pretrained(d, hiden_size=4)


# ---------------------------------------------------------------- bad directories and files
def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Toy.from_pretrained(tmp_path / "nope")


def test_missing_config(saved):
    _, d = saved
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        Toy.from_pretrained(d)


def test_invalid_config_json(saved):
    _, d = saved
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Toy.from_pretrained(d)


def test_missing_weights(saved):
    _, d = saved
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights .*model.safetensors.*pytorch_model.bin"):
        Toy.from_pretrained(d)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(saved, damage):
    _, d = saved
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        Toy.from_pretrained(d)


def test_corrupt_bin(saved):
    _, d = saved
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="corrupt"):
        Toy.from_pretrained(d)
    torch.save([torch.ones(2)], d / "pytorch_model.bin")
    with pytest.raises(ValueError, match="dict of tensors"):
        Toy.from_pretrained(d)


def _rewrite(d, edit):
    sd = load_file(d / "model.safetensors")
    edit(sd)
    save_file(sd, d / "model.safetensors")


def test_missing_tensor_listed(saved):
    _, d = saved
    _rewrite(d, lambda sd: sd.pop("proj.bias"))
    with pytest.raises(CheckpointError, match="1 missing tensor.*proj.bias") as e:
        Toy.from_pretrained(d)
    assert e.value.missing == ["proj.bias"] and not e.value.unexpected and not e.value.mismatched


def test_unexpected_tensor_listed(saved):
    _, d = saved
    _rewrite(d, lambda sd: sd.update({"extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="1 unexpected tensor.*extra.weight") as e:
        Toy.from_pretrained(d)
    assert e.value.unexpected == ["extra.weight"] and not e.value.missing


def test_misshaped_tensor_listed(saved):
    _, d = saved
    _rewrite(d, lambda sd: sd.update({"proj.bias": torch.zeros(5)}))
    with pytest.raises(CheckpointError, match="mis-shaped.*proj.bias") as e:
        Toy.from_pretrained(d)
    assert e.value.mismatched == [("proj.bias", (5,), (4,))]


def test_long_lists_are_shortened(tmp_path):
    "A wholly wrong checkpoint names the first few tensors and counts the rest."
    m = BertForPreTraining(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                                      intermediate_size=8, max_position_embeddings=8))
    d = m.save_pretrained(tmp_path / "bert")
    def rename_encoder(sd):
        for k in [k for k in sd if "encoder" in k]:
            sd["x." + k] = sd.pop(k)
    _rewrite(d, rename_encoder)
    with pytest.raises(CheckpointError, match=r"missing tensor.*\.\.\. and \d+ more") as e:
        BertForPreTraining.from_pretrained(d)
    assert len(e.value.missing) == len(e.value.unexpected) == 3 * 16


def test_wrong_model_type(saved):
    _, d = saved
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2' model"):
        Toy.from_pretrained(d)


def test_config_round_trip_ignores_unknown_keys():
    c = ToyConfig(vocab_size=9)
    d = {**c.to_dict(), "transformers_version": "5.0", "use_cache": True}
    assert ToyConfig.from_dict(d) == c


def test_load_hf_state_dict_prefers_safetensors(saved):
    _, d = saved
    torch.save({"junk": torch.zeros(1)}, d / "pytorch_model.bin")
    assert "junk" not in load_hf_state_dict(d)


def test_wrong_config_class():
    with pytest.raises(TypeError, match="ToyConfig"):
        Toy(BertConfig())


# ---------------------------------------------------------------- outputs shaped like transformers'
@dataclass
class _Out(W.ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple | None = None


def test_model_output_by_name_position_and_tuple():
    logits = torch.randn(2, 3)
    out = _Out(logits=logits)
    assert out.keys() == ["logits"] and out.to_tuple() == (logits,) and len(out) == 1
    assert out[0] is out["logits"] is logits and list(out) == ["logits"] and "loss" not in out
    with pytest.raises(KeyError, match="'loss' is not set"):
        out["loss"]
    full = _Out(torch.tensor(1.0), logits, (logits,))
    assert full[0] is full.loss and full[1] is logits and full[-1] == (logits,) and full[1:] == (logits, (logits,))
    assert dict(full.items()).keys() == {"loss", "logits", "hidden_states"}
    assert W.output_or_tuple(full, None) is full and W.output_or_tuple(full, True) is full
    assert W.output_or_tuple(full, False) == full.to_tuple()
    with pytest.raises(TypeError, match="return_dict must be True, False or None"):
        W.output_or_tuple(full, "yes")


# ---------------------------------------------------------------- bad configs and destinations
def test_config_json_not_an_object(saved):
    _, d = saved
    for text, kind in (("[1, 2]", "list"), ('"gpt2"', "str"), ("3", "int")):
        (d / "config.json").write_text(text)
        with pytest.raises(ValueError, match=f"holds a JSON {kind}, not an object"):
            Toy.from_pretrained(d)
    with pytest.raises(TypeError, match="needs a dict"):
        ToyConfig.from_dict([1, 2])


def test_save_pretrained_onto_a_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_text("keep me")
    with pytest.raises(FileExistsError, match="it is a file, not a directory"):
        Toy(ToyConfig()).save_pretrained(f)
    with pytest.raises(FileExistsError, match="part of its path is a file"):
        Toy(ToyConfig()).save_pretrained(f / "sub")
    assert f.read_text() == "keep me"


# ---------------------------------------------------------------- models by name (Hub)
def test_hub_id_shapes():
    for name in ("gpt2", "bert-base-uncased", "google-bert/bert-base-uncased", "openai-community/gpt2"):
        assert W._is_hub_id(name), name
    for name in ("/abs/dir", "./rel", "a/b/c", "../up", "a/../b", "", "with space"):
        assert not W._is_hub_id(name), name


def test_hub_name_offline_fails_fast_and_says_how(tmp_path, monkeypatch):
    import time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: pytest.fail("network probed while offline"))
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as e:
        BertForPreTraining.from_pretrained("bert-base-uncased")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "'bert-base-uncased' is not a local directory" in msg and "HF_HUB_OFFLINE" in msg
    assert "pass a local directory" in msg and "\n" not in msg


def test_hub_name_unreachable_fails_fast(tmp_path, monkeypatch):
    import time
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="'gpt2' is not a local directory and the Hugging Face Hub cannot "
                                                "be reached from here: pass a local directory"):
        Toy.from_pretrained("gpt2")
    assert time.perf_counter() - t0 < 5


def test_hub_name_that_is_a_local_directory_loads_locally(saved, monkeypatch):
    toy, d = saved
    monkeypatch.chdir(d.parent)
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: pytest.fail("network probed for a local directory"))
    again = Toy.from_pretrained("toy")  # 'toy' is shaped like a Hub id, but is a directory here
    assert torch.equal(again.emb.weight, toy.emb.weight)


@pytest.mark.parametrize("offline", [False, True])
def test_hub_download_path_with_a_fake_hub(saved, tmp_path, monkeypatch, offline):
    "The download route, with hf_hub_download replaced by a copy from a local 'hub' that has only a .bin file."
    import shutil
    import huggingface_hub
    toy, d = saved
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    calls = []

    def fake_download(repo_id, filename, local_files_only=False, **kw):
        calls.append((repo_id, filename, local_files_only))
        if not (d / filename).is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        snap = tmp_path / "cache" / repo_id
        snap.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(d / filename, snap / filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.chdir(tmp_path)
    again = Toy.from_pretrained("someone/toy")
    assert torch.equal(again.emb.weight, toy.emb.weight)
    assert [c[1] for c in calls] == ["config.json", "model.safetensors", "pytorch_model.bin"]
    assert all(c[2] is offline for c in calls)  # offline: only the local cache is consulted
