"""Chapter 5 (scratchformers.gpt2): equal to transformers' GPT-2 both ways, cache, padding, bad input."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

from scratchformers.attention import ATTN_IMPLEMENTATIONS  # noqa: E402
from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel, GPT2Model, gpt2_to_hf  # noqa: E402
from scratchformers.weights import CheckpointError  # noqa: E402

TOL, GRAD_RTOL = 1e-5, 1e-4

# odd sizes, head counts that are not powers of two, more than one layer
CONFIGS = {
    "5 heads of 6": dict(vocab_size=97, n_positions=33, n_embd=30, n_layer=2, n_head=5),
    "3 heads of 7, n_inner 37, exact gelu": dict(vocab_size=50, n_positions=20, n_embd=21, n_layer=3, n_head=3,
                                                  n_inner=37, activation_function="gelu", layer_norm_epsilon=1e-6),
    "6 heads of 6, vocab multiple of 64": dict(vocab_size=128, n_positions=16, n_embd=36, n_layer=2, n_head=6),
}


def _hf_config(sizes, impl="eager"):
    eos = sizes["vocab_size"] - 1
    return transformers.GPT2Config(**sizes, bos_token_id=eos, eos_token_id=eos, attn_implementation=impl)


def _batch(vocab_size, B=4, T=12, seed=0):
    "ids, attention_mask (right-padded, left-padded and unpadded rows) and labels (-100 at padding)."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long)
    am[1, T - 5:] = 0  # right padding
    am[2, :4] = 0  # left padding
    am[3, T - 1:] = 0
    labels = ids.masked_fill(am == 0, -100)
    labels[2, 4] = -100  # predicted from a padding position: meaningless, not a training target
    return ids, am, labels


def _maxdiff(a, b):
    return (a - b).abs().max().item()


def _hf_model(sizes, impl, seed=0, cls=None):
    torch.manual_seed(seed)
    return (cls or transformers.GPT2LMHeadModel)(_hf_config(sizes, impl)).eval()


@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_to_ours(tmp_path, name, impl, hf_impl):
    sizes = CONFIGS[name]
    theirs = _hf_model(sizes, hf_impl)
    theirs.save_pretrained(tmp_path)
    ours = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation=impl)
    assert not ours.training and ours.config.attn_implementation == impl
    ids, am, labels = _batch(sizes["vocab_size"])
    o = ours(ids, attention_mask=am, labels=labels, output_hidden_states=True)
    t = theirs(input_ids=ids, attention_mask=am, labels=labels, output_hidden_states=True)
    # transformers' SDPA path returns zeros for fully masked rows (left padding), its eager path and ours
    # an average: compare the real positions there (padding positions never reach a real one)
    sel = (lambda x: x[am.bool()]) if hf_impl == "sdpa" else (lambda x: x)
    assert o.logits.shape == t.logits.shape
    assert _maxdiff(sel(o.logits), sel(t.logits)) <= TOL
    assert len(o.hidden_states) == len(t.hidden_states) == sizes["n_layer"] + 1
    for i, (a, b) in enumerate(zip(o.hidden_states, t.hidden_states)):
        assert _maxdiff(sel(a), sel(b)) <= TOL, f"hidden state {i}"
    assert abs(o.loss.item() - t.loss.item()) <= TOL
    o.loss.backward()
    t.loss.backward()
    ours_grads = gpt2_to_hf({k: p.grad for k, p in ours.named_parameters()})
    theirs_params = dict(theirs.named_parameters())
    assert set(ours_grads) == set(theirs_params)
    for k, g in ours_grads.items():
        ref = theirs_params[k].grad
        rel = ((g - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        assert rel <= GRAD_RTOL, f"gradient of {k} differs by {rel:.2e} (relative)"


@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_ours_to_hf(tmp_path, name, hf_impl):
    sizes = CONFIGS[name]
    torch.manual_seed(1)
    ours = GPT2LMHeadModel(GPT2Config(**sizes)).eval()
    ours.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    assert sd["transformer.wte.weight"].shape == (sizes["vocab_size"], sizes["n_embd"])  # real size, not padded
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (sizes["n_embd"], 3 * sizes["n_embd"])  # Conv1D layout
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation=hf_impl).eval()
    ids, am, labels = _batch(sizes["vocab_size"], seed=1)
    o = ours(ids, attention_mask=am, labels=labels)
    t = theirs(input_ids=ids, attention_mask=am, labels=labels)
    sel = (lambda x: x[am.bool()]) if hf_impl == "sdpa" else (lambda x: x)
    assert _maxdiff(sel(o.logits), sel(t.logits)) <= TOL
    assert abs(o.loss.item() - t.loss.item()) <= TOL
    # without padding every position compares, and generation settings match too
    assert _maxdiff(ours(ids).logits, theirs(input_ids=ids).logits) <= TOL
    assert theirs.config.n_layer == sizes["n_layer"] and theirs.config.vocab_size == sizes["vocab_size"]


def test_base_model_both_ways(tmp_path):
    sizes = CONFIGS["5 heads of 6"]
    theirs = _hf_model(sizes, "eager", cls=transformers.GPT2Model)
    theirs.save_pretrained(tmp_path / "hf")
    ours = GPT2Model.from_pretrained(tmp_path / "hf")
    ids, am, _ = _batch(sizes["vocab_size"])
    assert _maxdiff(ours(ids, attention_mask=am).last_hidden_state,
                    theirs(input_ids=ids, attention_mask=am).last_hidden_state) <= TOL
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.GPT2Model.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    assert _maxdiff(back(input_ids=ids).last_hidden_state, ours(ids).last_hidden_state) <= TOL
    # a GPT2Model directory (like the hub's `gpt2`) loads into the LM-head model too, and vice versa
    lm = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    assert torch.equal(lm.transformer.wte.weight, ours.wte.weight)
    lm.save_pretrained(tmp_path / "lm")
    assert torch.equal(GPT2Model.from_pretrained(tmp_path / "lm").wpe.weight, ours.wpe.weight)


def test_old_checkpoint_layout(tmp_path):
    "OpenAI's files: no `transformer.` prefix, causal-mask buffers, pytorch_model.bin, a stored lm_head."
    sizes = CONFIGS["5 heads of 6"]
    theirs = _hf_model(sizes, "eager")
    sd = {k.removeprefix("transformer."): v.clone() for k, v in theirs.state_dict().items()}
    n = sizes["n_positions"]
    for i in range(sizes["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    sd["lm_head.weight"] = sd["wte.weight"].clone()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({**_hf_config(sizes).to_dict(), "n_ctx": n}))
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, _, _ = _batch(sizes["vocab_size"])
    assert _maxdiff(ours(ids).logits, theirs(input_ids=ids).logits) <= TOL


def test_small_parameter_count():
    with torch.device("meta"):
        ours = GPT2LMHeadModel(GPT2Config.small())
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert ours.num_parameters() == theirs.num_parameters() == 124_439_808
    c = GPT2Config.small()
    assert (c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size, c.layer_norm_epsilon) == (12, 768, 12, 1024, 50257, 1e-5)
    p = GPT2Config.pocket(vocab_size=8000)
    assert (p.n_layer, p.n_embd, p.n_head, p.n_positions, p.vocab_size) == (4, 256, 4, 256, 8000)


def test_config_matches_hf_defaults():
    ours, theirs = GPT2Config().to_dict(), transformers.GPT2Config().to_dict()
    for k, v in ours.items():
        if k in theirs and k != "attn_implementation":
            assert theirs[k] == v, k
    assert GPT2Config().inner_dim == 3072 and GPT2Config(n_inner=100).inner_dim == 100
    assert GPT2Config.from_dict(GPT2Config(n_layer=3).to_dict()) == GPT2Config(n_layer=3)


def test_initialisation():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=500, n_positions=64, n_embd=256, n_layer=8, n_head=4)
    m = GPT2LMHeadModel(cfg)
    std = cfg.initializer_range
    t = m.transformer
    assert abs(t.wte.weight.std().item() - std) < 1e-3 and abs(t.wpe.weight.std().item() - std) < 1e-3
    assert abs(t.h[0].attn.c_attn.weight.std().item() - std) < 1e-3
    for block in t.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(proj.weight.std().item() - std / math.sqrt(2 * cfg.n_layer)) < 5e-4
            assert torch.equal(proj.bias, torch.zeros_like(proj.bias))
    assert torch.equal(t.ln_f.weight, torch.ones(256))


def _tiny(impl="sdpa", **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=101, n_positions=24, n_embd=30, n_layer=2, n_head=3, attn_implementation=impl)
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("padded", [False, True])
def test_cache_token_by_token_equals_full(impl, padded):
    m = _tiny(impl)
    ids, am, _ = _batch(101, T=10)
    am = am if padded else None
    with torch.no_grad():
        full = m(ids, attention_mask=am).logits
        past, steps = None, []
        for t in range(ids.shape[1]):
            out = m(ids[:, t:t + 1], attention_mask=None if am is None else am[:, :t + 1],
                    past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
        stepwise = torch.cat(steps, 1)
    assert len(past) == 2 and past[0][0].shape == (4, 3, 10, 10)
    sel = (lambda x: x[am.bool()]) if padded else (lambda x: x)
    assert _maxdiff(sel(stepwise), sel(full)) <= TOL


def test_cache_equals_transformers_cache():
    sizes = CONFIGS["5 heads of 6"]
    theirs = _hf_model(sizes, "sdpa")
    ours = GPT2LMHeadModel(GPT2Config(**sizes))
    ours.load_state_dict({k: v for k, v in GPT2LMHeadModel._from_hf_state_dict(theirs.state_dict()).items()})
    ours.eval()
    ids, _, _ = _batch(sizes["vocab_size"], T=9)
    with torch.no_grad():
        o1, t1 = ours(ids[:, :6], use_cache=True), theirs(input_ids=ids[:, :6], use_cache=True)
        o2 = ours(ids[:, 6:], past_key_values=o1.past_key_values)
        t2 = theirs(input_ids=ids[:, 6:], past_key_values=t1.past_key_values)
    assert _maxdiff(o2.logits, t2.logits) <= TOL


def test_position_ids_as_transformers():
    sizes = CONFIGS["5 heads of 6"]
    theirs = _hf_model(sizes, "eager")
    ours = GPT2LMHeadModel(GPT2Config(**sizes)).eval()
    ours.load_state_dict(GPT2LMHeadModel._from_hf_state_dict(theirs.state_dict()))
    ids, am, _ = _batch(sizes["vocab_size"])
    pos = (am.cumsum(-1) - 1).clamp_min(0)  # count from the first real token, as transformers' generate does
    with torch.no_grad():
        assert _maxdiff(ours(ids, attention_mask=am, position_ids=pos).logits,
                        theirs(input_ids=ids, attention_mask=am, position_ids=pos).logits) <= TOL


def test_padded_vocab_is_invisible():
    m = _tiny()  # vocab 101 -> padded 128 inside
    assert m.vocab_bias.numel() == 128 and "vocab_bias" not in m.state_dict()
    unpadded = _tiny()
    unpadded.vocab_pad_multiple = 1  # instance attribute: rebuild its bias buffer
    unpadded.vocab_bias = torch.zeros(101)
    ids, am, labels = _batch(101)
    a, b = m(ids, attention_mask=am, labels=labels), unpadded(ids, attention_mask=am, labels=labels)
    assert a.logits.shape == (4, 12, 101)
    assert _maxdiff(a.logits, b.logits) <= 1e-6 and abs(a.loss.item() - b.loss.item()) <= 1e-6
    a.loss.backward()
    b.loss.backward()
    ga, gb = m.transformer.wte.weight.grad, unpadded.transformer.wte.weight.grad
    assert ga.shape == (101, 30) and _maxdiff(ga, gb) <= 1e-6


def test_dropout_in_training_only():
    m = _tiny()
    ids = torch.randint(0, 101, (2, 8))
    assert torch.equal(m(ids).logits, m(ids).logits)
    m.train()
    assert not torch.equal(m(ids).logits, m(ids).logits)


def test_labels_ignore_index_and_shift():
    m = _tiny()
    ids = torch.randint(0, 101, (2, 8))
    labels = ids.clone()
    labels[:, 3:] = -100
    out = m(ids, labels=labels)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :2].reshape(-1, 101), ids[:, 1:3].reshape(-1))
    assert abs(out.loss.item() - ref.item()) <= 1e-6


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_forward_input():
    m = _tiny()
    with pytest.raises(ValueError, match="too long.*n_positions=24"):
        m(torch.zeros(1, 25, dtype=torch.long))
    past = m(torch.zeros(1, 20, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(ValueError, match="20 cached \\+ 5 new"):
        m(torch.zeros(1, 5, dtype=torch.long), past_key_values=past)
    with pytest.raises(ValueError, match="outside the vocabulary \\[0, 101\\): \\[101\\]"):
        m(torch.tensor([[1, 101, 2]]))
    with pytest.raises(ValueError, match="outside the vocabulary.*\\[-1\\]"):
        m(torch.tensor([[1, -1, 2]]))
    with pytest.raises(TypeError, match="LongTensor"):
        m(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape \\(batch, seq_len\\)"):
        m(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="attention_mask has shape \\(2, 4\\) but must be .* \\(2, 3\\)"):
        m(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        m(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(3))
    with pytest.raises(ValueError, match="labels has shape .*; they must match .*the model shifts them itself"):
        m(torch.zeros(2, 3, dtype=torch.long), labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be token ids"):
        m(torch.zeros(2, 3, dtype=torch.long), labels=torch.full((2, 3), 101))
    with pytest.raises(ValueError, match="past_key_values has 1 entries"):
        m(torch.zeros(1, 1, dtype=torch.long), past_key_values=past[:1])


@pytest.mark.parametrize("kw, msg", [
    (dict(n_embd=30, n_head=4), "not divisible by n_head=4"),
    (dict(n_layer=0), "n_layer must be a positive integer"),
    (dict(vocab_size=-5), "vocab_size must be a positive integer"),
    (dict(activation_function="gelu_fast"), "not supported"),
    (dict(attn_pdrop=1.0), "attn_pdrop must be a number in \\[0.0, 1.0\\)"),
    (dict(attn_implementation="flash"), "choose one of"),
    (dict(n_inner=0), "n_inner must be"),
    (dict(layer_norm_epsilon=0.0), "layer_norm_epsilon"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GPT2Config(**kw)


def test_unsupported_hf_options(tmp_path):
    _tiny().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model"):
        GPT2LMHeadModel.from_pretrained(tmp_path)


def _edit_weights(path, edit):
    sd = load_file(path / "model.safetensors")
    edit(sd)
    save_file(sd, path / "model.safetensors")


def test_checkpoint_missing_unexpected_misshaped(tmp_path):
    _tiny().save_pretrained(tmp_path)

    def edit(sd):
        del sd["transformer.h.1.ln_2.bias"]
        sd["transformer.h.0.attn.q_attn.weight"] = torch.zeros(3)
        sd["transformer.wpe.weight"] = torch.zeros(23, 30)
    _edit_weights(tmp_path, edit)
    with pytest.raises(CheckpointError) as e:
        GPT2LMHeadModel.from_pretrained(tmp_path)
    msg = str(e.value)
    for name in ("transformer.h.1.ln_2.bias", "transformer.h.0.attn.q_attn.weight", "transformer.wpe.weight"):
        assert name in msg, name
    assert "(23, 30)" in msg and "(24, 30)" in msg
    assert e.value.missing == ["transformer.h.1.ln_2.bias"]
    assert e.value.unexpected == ["transformer.h.0.attn.q_attn.weight"]


def test_checkpoint_with_other_config(tmp_path):
    _tiny().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="missing.*transformer.h.2"):
        GPT2LMHeadModel.from_pretrained(tmp_path)


def test_corrupt_and_missing_files(tmp_path):
    _tiny().save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GPT2LMHeadModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        GPT2LMHeadModel.from_pretrained(tmp_path)


# ---- outputs shaped like transformers': attentions, indexing, return_dict -------------------------

def _pair(sizes=None, impl="sdpa", seed=0):
    "transformers' eager GPT-2 and ours with the same weights."
    sizes = sizes or CONFIGS["5 heads of 6"]
    theirs = _hf_model(sizes, "eager", seed=seed)
    ours = GPT2LMHeadModel(GPT2Config(**sizes, attn_implementation=impl)).eval()
    ours.load_state_dict(GPT2LMHeadModel._from_hf_state_dict(theirs.state_dict()))
    return theirs, ours


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("base", [False, True])
def test_output_attentions_equal_transformers(impl, base):
    theirs, ours = _pair(impl=impl)
    if base:
        theirs, ours = theirs.transformer, ours.transformer
    ids, am, _ = _batch(97)  # right-padded, left-padded and unpadded rows
    with torch.no_grad():
        for mask in (None, am):
            a = theirs(input_ids=ids, attention_mask=mask, output_attentions=True)
            b = ours(ids, attention_mask=mask, output_attentions=True)
            assert isinstance(b.attentions, tuple) and len(b.attentions) == len(a.attentions) == 2
            for x, y in zip(a.attentions, b.attentions):
                assert y.shape == x.shape == (4, 5, 12, 12)
                assert _maxdiff(x, y) <= TOL
            rows = [0, 1, 3]  # row 2 is left-padded: its fully masked padding queries average over all keys
            assert (b.attentions[0][rows][:, :, torch.arange(12)[:, None] < torch.arange(12)] == 0).all()  # causal
            assert ours(ids, attention_mask=mask).attentions is None


def test_output_attentions_with_a_cache_equal_transformers():
    theirs, ours = _pair()
    ids, _, _ = _batch(97, T=9)
    with torch.no_grad():
        o1, t1 = ours(ids[:, :6], use_cache=True), theirs(input_ids=ids[:, :6], use_cache=True)
        o2 = ours(ids[:, 6:], past_key_values=o1.past_key_values, output_attentions=True)
        t2 = theirs(input_ids=ids[:, 6:], past_key_values=t1.past_key_values, output_attentions=True)
    for x, y in zip(t2.attentions, o2.attentions, strict=True):
        assert y.shape == x.shape == (4, 5, 3, 9) and _maxdiff(x, y) <= TOL


def test_outputs_index_like_transformers():
    theirs, ours = _pair()
    ids, am, labels = _batch(97)
    for kw in ({"use_cache": False}, {"labels": labels, "use_cache": False},
               {"labels": labels, "use_cache": True, "output_hidden_states": True, "output_attentions": True}):
        with torch.no_grad():
            a, b = theirs(input_ids=ids, attention_mask=am, **kw), ours(ids, attention_mask=am, **kw)
            ta, tb = (theirs(input_ids=ids, attention_mask=am, return_dict=False, **kw),
                      ours(ids, attention_mask=am, return_dict=False, **kw))
        want = ["logits"] if len(kw) == 1 else ["loss", "logits"] if len(kw) == 2 else \
            ["loss", "logits", "past_key_values", "hidden_states", "attentions"]
        hf_keys = [k for k in a.keys() if k != "cross_attentions"]  # HF adds an empty one; GPT-2 has none
        assert hf_keys == b.keys() == want and len(b) == len(want) and list(b) == want
        assert isinstance(tb, tuple) and len(tb) == len(want) and list(a.keys())[:len(want)] == want
        for i, k in enumerate(want):
            assert b[k] is getattr(b, k) and b[i] is b[k]
            if k in ("loss", "logits"):
                assert _maxdiff(a[i], b[i]) <= TOL and _maxdiff(ta[i], tb[i]) <= TOL
        assert b.to_tuple() == tuple(b[k] for k in want)
    base = ours.transformer(ids, return_dict=False)
    assert isinstance(base, tuple) and len(base) == 1 and base[0].shape == (4, 12, 30)


# ---- left-padded batches, as batched generation feeds them ------------------------------------------

def _left_padded(vocab_size, lengths=(7, 3, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(0, vocab_size, (len(lengths), T), generator=g)
    am = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        am[i, T - n:] = 1
        ids[i, :T - n] = vocab_size - 1  # a pad id (the eos, as GPT-2 pads)
    return ids, am


def _hf_positions(am):
    "transformers' generate: position_ids = cumsum(mask) - 1, with 1 at padding."
    return (am.cumsum(-1) - 1).masked_fill(am == 0, 1)


@pytest.mark.parametrize("impl", ATTN_IMPLEMENTATIONS)
def test_left_padded_batch_equals_transformers_with_and_without_cache(impl):
    theirs, ours = _pair(impl=impl)
    ids, am = _left_padded(97)
    real = am.bool()
    g = torch.Generator().manual_seed(3)
    new = torch.randint(0, 96, (3, 4), generator=g)  # 4 decoding steps, one token at a time
    with torch.no_grad():
        a = theirs(input_ids=ids, attention_mask=am, position_ids=_hf_positions(am), use_cache=True)
        b = ours(ids, attention_mask=am, position_ids=_hf_positions(am), use_cache=True)
        assert _maxdiff(a.logits[real], b.logits[real]) <= TOL
        past_a, past_b, mask, full_ids = a.past_key_values, b.past_key_values, am, ids
        for t in range(new.size(1)):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)  # (B, past + 1)
            pos = _hf_positions(mask)[:, -1:]
            a = theirs(input_ids=new[:, t:t + 1], attention_mask=mask, position_ids=pos, past_key_values=past_a,
                       use_cache=True)
            b = ours(new[:, t:t + 1], attention_mask=mask, position_ids=pos, past_key_values=past_b, use_cache=True)
            past_a, past_b = a.past_key_values, b.past_key_values
            assert _maxdiff(a.logits, b.logits) <= TOL, t
            full_ids = torch.cat([full_ids, new[:, t:t + 1]], 1)
            # without a cache: the whole left-padded sequence again gives the same last logits
            c = ours(full_ids, attention_mask=mask, position_ids=_hf_positions(mask))
            assert _maxdiff(c.logits[:, -1:], b.logits) <= TOL, t
    # each row equals its prompt run alone, unpadded
    for i, n in enumerate(am.sum(1).tolist()):
        alone = ours(full_ids[i:i + 1, -(n + 4):]).logits[0, -1]
        assert _maxdiff(alone, b.logits[i, -1]) <= TOL


def test_generate_method_calls_generation():
    from scratchformers.generation import generate
    m = _tiny()
    ids = torch.randint(0, 100, (2, 5))
    out = m.generate(ids, max_new_tokens=6, eos_token_id=None)  # the default eos lies outside this vocab
    assert out.shape == (2, 11) and torch.equal(out[:, :5], ids)
    assert torch.equal(out, generate(m, ids, max_new_tokens=6, eos_token_id=None))
    with torch.no_grad():  # greedy: each new token is the argmax after the previous ones
        logits = m(out[:, :-1]).logits
    assert torch.equal(out[:, 5:], logits[:, 4:].argmax(-1))


# ---- bad input, never NaN -----------------------------------------------------------------------------

@pytest.mark.parametrize("call, err, match", [
    (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), ValueError, "input_ids has no tokens \\(shape \\(2, 0\\)\\)"),
    (lambda m: m(torch.zeros(2, 0, dtype=torch.long), labels=torch.zeros(2, 0, dtype=torch.long)), ValueError,
     "no tokens"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), labels=torch.zeros(1, 3)), TypeError,
     "labels must hold integer token ids \\(torch.long\\), got torch.float32"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), position_ids=torch.arange(3.0)), TypeError,
     "position_ids must hold integer positions \\(torch.long\\), got torch.float32"),
    (lambda m: m(torch.zeros(2, 3, dtype=torch.long), position_ids=torch.zeros(3, 3, dtype=torch.long)), ValueError,
     "position_ids must have shape \\(2, 3\\) or \\(3,\\)"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), position_ids=torch.tensor([0, 1, 24])), ValueError,
     "position_ids must lie in \\[0, 24\\).*\\[0, 24\\]"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 2, 1]])), ValueError,
     "attention_mask must hold only 0 \\(padding\\) and 1 \\(real token\\), got values \\[1, 2\\]"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[0.5, 1.0, 1.0]])), ValueError,
     "only 0"),
    (lambda m: m(torch.zeros(1, 3, dtype=torch.long), return_dict=1), TypeError, "return_dict"),
])
def test_more_bad_forward_input(call, err, match):
    with pytest.raises(err, match=match):
        call(_tiny())


def test_mask_of_floats_and_bools_still_accepted():
    m = _tiny()
    ids, am, _ = _batch(101)
    ref = m(ids, attention_mask=am).logits
    assert _maxdiff(m(ids, attention_mask=am.float()).logits, ref) == 0
    assert _maxdiff(m(ids, attention_mask=am.bool()).logits, ref) == 0


def test_all_labels_ignored_gives_zero_loss_and_zero_gradients():
    m = _tiny()
    m.train()
    ids = torch.randint(0, 101, (2, 6))
    for labels in (torch.full_like(ids, -100), ids.clone().index_fill_(1, torch.arange(1, 6), -100)):
        out = m(ids, labels=labels)  # the second: only the first label, which nothing predicts
        assert out.loss.item() == 0.0
        m.zero_grad()
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() and (p.grad == 0).all() for p in m.parameters() if p.grad is not None)
    m(ids[:, :1], labels=ids[:, :1]).loss.backward()  # T=1: no next token to predict, loss 0, not NaN


def test_custom_cross_entropy_gradient_equals_torch_when_all_ignored():
    from scratchformers.gpt2 import _CrossEntropy
    z = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    z2 = z.detach().clone().requires_grad_()
    y = torch.full((5,), -100)
    loss = _CrossEntropy.apply(z, y)
    assert loss.item() == 0.0
    loss.backward()
    torch.nn.functional.cross_entropy(z2, y, ignore_index=-100).backward()  # NaN loss, but its gradient is 0
    assert torch.equal(z.grad, z2.grad) and (z.grad == 0).all()
    y = torch.tensor([1, -100, 6, -100, 0])
    assert torch.autograd.gradcheck(lambda z: _CrossEntropy.apply(z, y), (z,))


@pytest.mark.parametrize("kw, msg", [
    (dict(initializer_range=-1), "initializer_range must be a number in \\(0.0, inf\\), got -1"),
    (dict(initializer_range=0), "initializer_range"),
    (dict(initializer_range=float("inf")), "initializer_range"),
    (dict(layer_norm_epsilon=-1e-5), "layer_norm_epsilon must be a number in \\(0.0, inf\\)"),
    (dict(resid_pdrop=-0.1), "resid_pdrop must be a number in \\[0.0, 1.0\\), got -0.1"),
    (dict(embd_pdrop="0.1"), "embd_pdrop must be a number"),
    (dict(n_embd=768.0), "n_embd must be a positive integer, got 768.0"),
    (dict(n_head=True), "n_head must be a positive integer"),
    (dict(n_inner=3072.5), "n_inner must be a positive integer"),
    (dict(eos_token_id=-1), "eos_token_id must be an integer >= 0"),
    (dict(bos_token_id="<|endoftext|>"), "bos_token_id must be an integer >= 0"),
    (dict(activation_function="swish"), "activation_function='swish' is not supported; choose one of"),
])
def test_more_bad_config_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GPT2Config(**kw)


def test_eos_outside_the_vocabulary_still_loads(tmp_path):
    cfg = GPT2Config(vocab_size=50, n_positions=8, n_embd=12, n_layer=1, n_head=2, eos_token_id=50256)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    assert GPT2LMHeadModel.from_pretrained(tmp_path).config.eos_token_id == 50256


def test_compiles_without_graph_breaks_with_positions_and_mask():
    m = _tiny()
    ids, am = _left_padded(101)
    pos = _hf_positions(am)
    labels = ids.masked_fill(am == 0, -100)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    a = m(ids, attention_mask=am, position_ids=pos, labels=labels)
    b = compiled(ids, attention_mask=am, position_ids=pos, labels=labels)
    assert _maxdiff(a.logits, b.logits) <= 1e-6 and abs(a.loss.item() - b.loss.item()) <= 1e-6


def test_int32_labels_and_positions_work_and_unsigned_are_refused():
    m = _tiny()
    ids = torch.randint(0, 101, (2, 8))
    a = m(ids, labels=ids, position_ids=torch.arange(8))
    b = m(ids.int(), labels=ids.int(), position_ids=torch.arange(8, dtype=torch.int32))
    assert a.loss.item() == b.loss.item()
    with pytest.raises(TypeError, match="labels must hold integer token ids \\(torch.long\\), got torch.uint8"):
        m(ids, labels=ids.to(torch.uint8))
