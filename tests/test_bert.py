"""BERT (chapter 4) against transformers: outputs, loss and gradients for random small configs, both ways; bad input."""
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from scratchformers.bert import BertConfig, BertForPreTraining, BertModel
from scratchformers.weights import CheckpointError

# Odd widths, head counts that are not powers of two, more than one layer.
CONFIGS = [
    dict(vocab_size=97, hidden_size=30, num_hidden_layers=3, num_attention_heads=5, intermediate_size=37,
         max_position_embeddings=20, type_vocab_size=3),
    dict(vocab_size=61, hidden_size=21, num_hidden_layers=2, num_attention_heads=3, intermediate_size=50,
         max_position_embeddings=13, type_vocab_size=2, layer_norm_eps=1e-7, pad_token_id=3),
    dict(vocab_size=128, hidden_size=36, num_hidden_layers=4, num_attention_heads=6, intermediate_size=72,
         max_position_embeddings=16, type_vocab_size=2, initializer_range=0.05),
]


def _diff(a, b):
    return (a.detach() - b.detach()).abs().max().item()


def _batch(cfg: dict, seed: int, B: int = 3, T: int = 11):
    "A batch with padding in two sequences, random segments, some MLM labels and NSP labels."
    g = torch.Generator().manual_seed(seed)
    T = min(T, cfg["max_position_embeddings"])
    pad = cfg.get("pad_token_id", 0)
    ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 3:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = pad
    labels = torch.where(torch.rand(B, T, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[0, 1] = ids[0, 1]
    return dict(input_ids=ids, token_type_ids=torch.randint(0, cfg["type_vocab_size"], (B, T), generator=g),
                attention_mask=mask, labels=labels, next_sentence_label=torch.tensor([0, 1, 1]))


def _grad_rel_diff(hf, ours):
    "Worst per-tensor gradient difference, relative to the tensor's largest gradient (floored at 1e-3 of the model's)."
    g = dict(ours.named_parameters())
    scale = max(p.grad.abs().max().item() for p in hf.parameters())
    return max((_diff(p.grad, g[n].grad) / max(p.grad.abs().max().item(), 1e-3 * scale), n)
               for n, p in hf.named_parameters())


@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_pretraining_parity_both_ways(tmp_path, ci, hf_impl):
    cfg = CONFIGS[ci]
    torch.manual_seed(ci)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**cfg, attn_implementation=hf_impl)).eval()
    hf.save_pretrained(tmp_path / "hf")
    batch = _batch(cfg, seed=ci)
    a = hf(**batch, output_hidden_states=True)
    a.loss.backward()
    for impl in ("eager", "sdpa"):
        ours = BertForPreTraining.from_pretrained(tmp_path / "hf", attn_implementation=impl)
        assert not ours.training
        b = ours(**batch, output_hidden_states=True)
        assert _diff(a.prediction_logits, b.prediction_logits) <= 1e-5
        assert _diff(a.seq_relationship_logits, b.seq_relationship_logits) <= 1e-5
        assert len(a.hidden_states) == len(b.hidden_states) == cfg["num_hidden_layers"] + 1
        for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
            assert _diff(x, y) <= 1e-5, f"hidden state {i} differs by {_diff(x, y):.2e}"
        assert _diff(a.loss, b.loss) <= 1e-5
        b.loss.backward()
        rel, name = _grad_rel_diff(hf, ours)
        assert rel <= 1e-4, f"gradient of {name} differs by {rel:.2e} (relative)"
        # the other way: our save_pretrained -> transformers' from_pretrained
        back = transformers.BertForPreTraining.from_pretrained(ours.save_pretrained(tmp_path / f"ours-{impl}")).eval()
        c = back(**batch)
        assert _diff(c.prediction_logits, b.prediction_logits) <= 1e-5
        assert _diff(c.seq_relationship_logits, b.seq_relationship_logits) <= 1e-5
        assert _diff(c.loss, b.loss) <= 1e-5


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_model_parity_both_ways(tmp_path, impl):
    cfg = CONFIGS[1]
    torch.manual_seed(1)
    hf = transformers.BertModel(transformers.BertConfig(**cfg, attn_implementation=impl)).eval()
    hf.save_pretrained(tmp_path / "hf")
    batch = _batch(cfg, seed=5)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    a = hf(**inputs, output_hidden_states=True)
    ours = BertModel.from_pretrained(tmp_path / "hf", attn_implementation=impl)
    b = ours(**inputs, output_hidden_states=True)
    assert _diff(a.last_hidden_state, b.last_hidden_state) <= 1e-5
    assert _diff(a.pooler_output, b.pooler_output) <= 1e-5
    assert all(_diff(x, y) <= 1e-5 for x, y in zip(a.hidden_states, b.hidden_states))
    (a.last_hidden_state.square().sum() + a.pooler_output.sum()).backward()
    (b.last_hidden_state.square().sum() + b.pooler_output.sum()).backward()
    rel, name = _grad_rel_diff(hf, ours)
    assert rel <= 1e-4, f"gradient of {name} differs by {rel:.2e} (relative)"
    back = transformers.BertModel.from_pretrained(ours.save_pretrained(tmp_path / "ours")).eval()
    assert _diff(back(**inputs).last_hidden_state, b.last_hidden_state) <= 1e-5


def test_base_model_from_pretraining_dir_and_back(tmp_path):
    "BertModel takes the encoder out of a pre-training directory; BertForPreTraining names the missing heads."
    cfg = CONFIGS[0]
    hf = transformers.BertForPreTraining(transformers.BertConfig(**cfg)).eval()
    hf.save_pretrained(tmp_path / "pt")
    ids = _batch(cfg, 0)["input_ids"]
    enc = BertModel.from_pretrained(tmp_path / "pt")
    assert _diff(enc(ids).last_hidden_state, hf.bert(input_ids=ids).last_hidden_state) <= 1e-5
    enc.save_pretrained(tmp_path / "enc")
    with pytest.raises(CheckpointError) as e:
        BertForPreTraining.from_pretrained(tmp_path / "enc")
    assert "cls.seq_relationship.weight" in e.value.missing and not e.value.unexpected
    assert "BertModel" in str(e.value)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_old_style_checkpoint(tmp_path, fmt):
    "bert-base-uncased-style files: LayerNorm gamma/beta, position_ids buffer, decoder weight and bias stored."
    from safetensors.torch import save_file
    cfg = CONFIGS[0]
    hf = transformers.BertForPreTraining(transformers.BertConfig(**cfg)).eval()
    old = {}
    for k, v in hf.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old[k] = v.clone()
    old["cls.predictions.decoder.weight"] = old["bert.embeddings.word_embeddings.weight"].clone()
    old["cls.predictions.decoder.bias"] = old["cls.predictions.bias"].clone()
    old["bert.embeddings.position_ids"] = torch.arange(cfg["max_position_embeddings"])[None]
    if fmt == "bin":
        torch.save(old, tmp_path / "pytorch_model.bin")
    else:
        save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert", "architectures": ["BertForMaskedLM"],
                                                      "position_embedding_type": "absolute", "gradient_checkpointing": False}))
    batch = _batch(cfg, 1)
    ours = BertForPreTraining.from_pretrained(tmp_path)
    assert _diff(ours(**batch).loss, hf(**batch).loss) <= 1e-5
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_parameter_counts_base_equal_transformers():
    with torch.device("meta"):
        for ours, theirs in [(BertModel, transformers.BertModel), (BertForPreTraining, transformers.BertForPreTraining)]:
            n_ours = ours(BertConfig.base()).num_parameters()
            n_hf = theirs(transformers.BertConfig()).num_parameters()
            assert n_ours == n_hf, f"{ours.__name__}: {n_ours} parameters, transformers {n_hf}"


def test_base_forward_shapes():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.base()).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 30522, (1, 8)))
    assert out.prediction_logits.shape == (1, 8, 30522) and out.seq_relationship_logits.shape == (1, 2)
    assert torch.isfinite(out.prediction_logits).all()


def test_presets():
    p = BertConfig.pocket(vocab_size=8000)
    assert (p.num_hidden_layers, p.hidden_size, p.num_attention_heads, p.intermediate_size,
            p.max_position_embeddings, p.vocab_size) == (4, 256, 4, 1024, 128, 8000)
    b = BertConfig.base()
    assert (b.num_hidden_layers, b.hidden_size, b.num_attention_heads, b.intermediate_size, b.layer_norm_eps,
            b.hidden_act, b.attn_implementation) == (12, 768, 12, 3072, 1e-12, "gelu", "sdpa")


def test_initialisation():
    torch.manual_seed(0)
    m = BertForPreTraining(BertConfig(vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=256))
    for name, p in m.named_parameters():
        if "LayerNorm.weight" in name:
            assert torch.all(p == 1), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            tol = 0.02 * 5 / math.sqrt(2 * p.numel())  # five standard errors of a sample std
            assert abs(p.std().item() - 0.02) < tol, f"{name}: std {p.std().item():.4f}, expected 0.02"
    assert torch.all(m.bert.embeddings.word_embeddings.weight[0] == 0)  # [PAD]
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight


def test_attention_dropout_is_applied():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    for impl in ("eager", "sdpa"):
        m = BertModel(BertConfig(**{**cfg.__dict__, "attn_implementation": impl}))
        ids = torch.randint(0, 50, (2, 7))
        m.train()
        assert _diff(m(ids).last_hidden_state, m(ids).last_hidden_state) > 1e-4, impl
        m.eval()
        assert _diff(m(ids).last_hidden_state, m(ids).last_hidden_state) == 0, impl


def test_losses_and_labelled_only():
    torch.manual_seed(0)
    cfg = CONFIGS[0]
    m = BertForPreTraining(BertConfig(**cfg)).eval()
    batch = _batch(cfg, 3)
    full = m(**batch)
    assert torch.allclose(full.loss, full.mlm_loss + full.nsp_loss)
    mlm_only = m(batch["input_ids"], labels=batch["labels"], token_type_ids=batch["token_type_ids"],
                 attention_mask=batch["attention_mask"])
    assert torch.allclose(mlm_only.loss, full.mlm_loss) and mlm_only.nsp_loss is None
    assert m(batch["input_ids"]).loss is None
    lab = m(**batch, labelled_only=True)
    keep = batch["labels"] != -100
    assert lab.prediction_logits.shape == (int(keep.sum()), cfg["vocab_size"])
    assert _diff(lab.prediction_logits, full.prediction_logits[keep]) <= 1e-5
    assert _diff(lab.loss, full.loss) <= 1e-6
    with pytest.raises(ValueError, match="labelled_only"):
        m(batch["input_ids"], labelled_only=True)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, match", [
    (dict(hidden_size=100, num_attention_heads=3), "not divisible"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(attn_implementation="flash"), "attn_implementation"),
    (dict(num_hidden_layers=0), "positive"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(pad_token_id=30522), "pad_token_id"),
])
def test_bad_config_rejected_when_made(kw, match):
    with pytest.raises(ValueError, match=match):
        BertConfig(**kw)


def test_bad_hf_config_values():
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.from_dict({"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="'gpt2'"):
        BertConfig.from_dict({"model_type": "gpt2"})
    assert BertConfig.from_dict({"hidden_size": 24, "num_attention_heads": 4, "use_cache": True}).hidden_size == 24


@pytest.fixture(scope="module")
def tiny():
    return BertForPreTraining(BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
                                         intermediate_size=16, max_position_embeddings=10)).eval()


@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.randint(0, 50, (2, 11))), "exceeds max_position_embeddings=10"),
    (lambda m: m(torch.tensor([[1, 2, 50]])), "input_ids holds values in \\[1, 50\\]"),
    (lambda m: m(torch.tensor([[1, -1, 2]])), "input_ids holds values in \\[-1, 2\\]"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0, 1, 2]])), "token_type_ids holds values"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0, 1]])), "token_type_ids has shape \\(1, 2\\)"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(3, 1)), "attention_mask has shape \\(3, 1\\)"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[1, 2, 0]])), "only 0"),
    (lambda m: m(torch.tensor([1, 2, 3])), "\\(batch, seq_len\\)"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]])), "labels has shape"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), next_sentence_label=torch.tensor([0, 1])), "next_sentence_label"),
])
def test_bad_input(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny)


def test_float_ids_rejected(tiny):
    with pytest.raises(TypeError, match="integer token ids"):
        tiny(torch.tensor([[1.0, 2.0]]))


def test_untrained_loss_is_uniform_guess():
    torch.manual_seed(0)
    m = BertForPreTraining(BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128)).eval()
    ids = torch.randint(5, 1000, (4, 32))
    out = m(ids, labels=ids, next_sentence_label=torch.tensor([0, 1, 0, 1]))
    assert abs(out.mlm_loss.item() - math.log(1000)) < 0.05
    assert abs(out.nsp_loss.item() - math.log(2)) < 0.05


# ---------------------------------------------------------------- outputs shaped like transformers'
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("cls", ["BertModel", "BertForPreTraining"])
def test_output_attentions_equal_transformers(tmp_path, cls, impl):
    cfg = CONFIGS[0]
    torch.manual_seed(7)
    hf = getattr(transformers, cls)(transformers.BertConfig(**cfg, attn_implementation="eager")).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = {"BertModel": BertModel, "BertForPreTraining": BertForPreTraining}[cls].from_pretrained(
        tmp_path / "hf", attn_implementation=impl)
    batch = _batch(cfg, seed=2)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    a, b = hf(**inputs, output_attentions=True), ours(**inputs, output_attentions=True)
    assert isinstance(b.attentions, tuple) and len(b.attentions) == len(a.attentions) == cfg["num_hidden_layers"]
    for i, (x, y) in enumerate(zip(a.attentions, b.attentions)):
        assert y.shape == x.shape == (3, cfg["num_attention_heads"], 11, 11)
        assert _diff(x, y) <= 1e-5, f"layer {i} attention differs by {_diff(x, y):.2e}"
    assert (b.attentions[0][1, :, :, 8:] == 0).all()  # padding gets no weight
    plain = ours(**inputs)
    assert plain.attentions is None
    first = plain.last_hidden_state if cls == "BertModel" else plain.prediction_logits
    assert _diff(first, b[0]) <= 1e-6  # the same model output with or without the weights


def test_outputs_index_like_transformers(tmp_path):
    cfg = CONFIGS[1]
    torch.manual_seed(3)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**cfg, attn_implementation="eager")).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = BertForPreTraining.from_pretrained(tmp_path / "hf")
    batch = _batch(cfg, seed=1)
    for kw in ({}, {"labels": batch["labels"], "next_sentence_label": batch["next_sentence_label"]},
               {"output_hidden_states": True, "output_attentions": True}):
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")} | kw
        a, b = hf(**inputs), ours(**inputs)
        hf_keys = list(a.keys())
        assert len(hf_keys) == (3 if "labels" in kw else 4 if kw else 2)  # + loss, or + hidden states and attentions
        assert b.keys()[:len(hf_keys)] == hf_keys  # extra fields (mlm_loss, nsp_loss) come after HF's
        for i, k in enumerate(hf_keys):
            x, y = a[i], b[i]
            assert b[k] is y and getattr(b, k) is y
            for u, w in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,)):
                assert _diff(u, w) <= 1e-5, (k, _diff(u, w))
        t_hf, t_ours = hf(**inputs, return_dict=False), ours(**inputs, return_dict=False)
        assert isinstance(t_ours, tuple) and len(t_ours) == len(b.to_tuple())
        assert all(_diff(x if not isinstance(x, tuple) else x[0], y if not isinstance(y, tuple) else y[0]) <= 1e-5
                   for x, y in zip(t_hf, t_ours))
    enc = BertModel(BertConfig(**cfg)).eval()
    out = enc(batch["input_ids"], return_dict=False)
    assert isinstance(out, tuple) and len(out) == 2 and out[1].shape == (3, cfg["hidden_size"])
    with pytest.raises(TypeError, match="return_dict"):
        enc(batch["input_ids"], return_dict="no")


# ---------------------------------------------------------------- labels: validated, never NaN
@pytest.mark.parametrize("call, err, match", [
    (lambda m: m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1.0, 2.0, -100.0]])), TypeError,
     "labels must hold integer token ids \\(torch.long\\), got torch.float32"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 50, -100]])), ValueError,
     "labels must be token ids in \\[0, 50\\) or -100 \\(not predicted\\), got \\[50\\]"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, -5, -100]])), ValueError, "got \\[-5\\]"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), next_sentence_label=torch.tensor([2])), ValueError,
     "next_sentence_label must hold 0 \\(B follows A\\) or 1 \\(B is random\\), got \\[2\\]"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), next_sentence_label=torch.tensor([-100])), ValueError, "got \\[-100\\]"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), next_sentence_label=torch.tensor([1.0])), TypeError,
     "next_sentence_label must hold integer ids \\(torch.long\\), got torch.float32"),
    (lambda m: m(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0.0, 1.0, 0.0]])), TypeError,
     "token_type_ids must hold integer ids \\(torch.long\\), got torch.float32"),
    (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), ValueError, "input_ids has no tokens \\(shape \\(2, 0\\)\\)"),
    (lambda m: m(torch.zeros(2, 0, dtype=torch.long), labels=torch.zeros(2, 0, dtype=torch.long)), ValueError,
     "no tokens"),
])
def test_bad_labels_and_ids(tiny, call, err, match):
    with pytest.raises(err, match=match):
        call(tiny)


@pytest.mark.parametrize("labelled_only", [False, True])
def test_all_labels_ignored_gives_zero_loss_and_zero_gradients(labelled_only):
    torch.manual_seed(0)
    m = BertForPreTraining(BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
                                      intermediate_size=16, max_position_embeddings=10))
    ids = torch.randint(0, 50, (2, 6))
    out = m(ids, labels=torch.full_like(ids, -100), labelled_only=labelled_only)
    assert out.loss.item() == 0.0 and out.mlm_loss.item() == 0.0
    out.loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() and (g == 0).all() for g in grads)
    # with some labels the loss is the mean over them, as F.cross_entropy computes it
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 4] = 7, 9
    out = m(ids, labels=labels)
    ref = torch.nn.functional.cross_entropy(out.prediction_logits.reshape(-1, 50), labels.reshape(-1))
    assert _diff(out.mlm_loss, ref) <= 1e-6


@pytest.mark.parametrize("kw, match", [
    (dict(initializer_range=-1), "initializer_range must be a number in \\(0.0, inf\\), got -1"),
    (dict(initializer_range=float("nan")), "initializer_range"),
    (dict(layer_norm_eps=0), "layer_norm_eps must be a number in \\(0.0, inf\\)"),
    (dict(attention_probs_dropout_prob=1.0), "attention_probs_dropout_prob must be a number in \\[0.0, 1.0\\)"),
    (dict(hidden_dropout_prob="0.1"), "hidden_dropout_prob must be a number"),
    (dict(hidden_size=768.0), "hidden_size must be a positive integer, got 768.0"),
    (dict(type_vocab_size=True), "type_vocab_size must be a positive integer"),
    (dict(pad_token_id=-1), "pad_token_id must be an integer >= 0"),
    (dict(pad_token_id=1.0), "pad_token_id must be an integer >= 0"),
])
def test_more_bad_config_values(kw, match):
    with pytest.raises(ValueError, match=match):
        BertConfig(**kw)


def test_compiles_without_graph_breaks():
    "The input checks step aside inside torch.compile (fullgraph), as GPT-2's do; the numbers are unchanged."
    torch.manual_seed(0)
    m = BertForPreTraining(BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
                                      intermediate_size=16, max_position_embeddings=10)).eval()
    ids = torch.randint(0, 50, (2, 6))
    am = torch.ones_like(ids)
    am[1, 4:] = 0
    kw = dict(token_type_ids=torch.zeros_like(ids), attention_mask=am, labels=ids.masked_fill(am == 0, -100),
              next_sentence_label=torch.tensor([0, 1]))
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    a, b = m(ids, **kw), compiled(ids, **kw)
    assert _diff(a.loss, b.loss) <= 1e-6 and _diff(a.prediction_logits, b.prediction_logits) <= 1e-6


def test_int32_ids_and_labels_work_and_unsigned_are_refused(tiny):
    ids = torch.randint(0, 50, (2, 6))
    labels = ids.masked_fill(torch.rand(2, 6) < 0.5, -100)
    nsp = torch.tensor([0, 1])
    a = tiny(ids, labels=labels, next_sentence_label=nsp)
    b = tiny(ids.int(), token_type_ids=torch.zeros(2, 6, dtype=torch.int32), labels=labels.int(),
             next_sentence_label=nsp.int())
    assert _diff(a.loss, b.loss) == 0
    with pytest.raises(TypeError, match="labels must hold integer token ids \\(torch.long\\), got torch.uint8"):
        tiny(ids, labels=ids.to(torch.uint8))
