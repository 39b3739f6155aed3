"""Chapter 8 (scratchformers.classification): classifiers equal to transformers both ways, loading a
pretraining run with a new head, bad input, and a tiny fine-tune + classify end to end."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from scratchformers.bert import BertConfig, BertForPreTraining  # noqa: E402
from scratchformers.classification import (  # noqa: E402
    FINETUNE_PRESETS,
    BertClassifierConfig,
    BertForSequenceClassification,
    GPT2ClassifierConfig,
    GPT2ForSequenceClassification,
    classification_loss,
    classify,
    encode_texts,
    finetune,
    head_tail,
    labelled_reviews,
    last_token_index,
    model_kind,
)
from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel, gpt2_to_hf  # noqa: E402
from scratchformers.weights import CheckpointError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5

BERT_SIZES = {
    "4 heads of 8, 2 labels": dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        num_labels=2,
    ),
    "5 heads of 6, 3 labels": dict(
        vocab_size=120,
        hidden_size=30,
        num_hidden_layers=3,
        num_attention_heads=5,
        intermediate_size=64,
        max_position_embeddings=24,
        num_labels=3,
        layer_norm_eps=1e-6,
    ),
}
GPT2_SIZES = {
    "5 heads of 6, 2 labels": dict(
        vocab_size=97, n_positions=33, n_embd=30, n_layer=2, n_head=5, num_labels=2
    ),
    "3 heads of 7, 3 labels, exact gelu": dict(
        vocab_size=50,
        n_positions=20,
        n_embd=21,
        n_layer=3,
        n_head=3,
        n_inner=37,
        activation_function="gelu",
        num_labels=3,
    ),
}
BERT_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2_NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _batch(vocab_size, pad, num_labels, padding="both", B=4, T=12, seed=0):
    "ids, attention_mask and labels; rows padded on the right, the left, or ('both') some of each."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (B, T), generator=g)
    ids[ids == pad] = (pad + 1) % vocab_size
    mask = torch.ones(B, T, dtype=torch.long)
    if padding in ("right", "both"):
        mask[1, T - 5 :], mask[3, T - 1 :] = 0, 0
    if padding in ("left", "both"):
        mask[2, :4] = 0
    if padding == "left":
        mask[3, :2] = 0
    return ids.masked_fill(mask == 0, pad), mask, torch.randint(0, num_labels, (B,), generator=g)


def _compare(ours, theirs, batch, to_hf=lambda sd: sd):
    "Largest differences of logits, loss and gradients."
    a, b = ours(**batch), theirs(**batch)
    a.loss.backward()
    b.loss.backward()
    grads, theirs_grads = (
        to_hf({n: p.grad for n, p in ours.named_parameters()}),
        dict(theirs.named_parameters()),
    )
    assert grads.keys() == theirs_grads.keys()
    return {
        "logits": (a.logits - b.logits).abs().max().item(),
        "loss": (a.loss - b.loss).abs().item(),
        "grad": max((g - theirs_grads[n].grad).abs().max().item() for n, g in grads.items()),
    }


@pytest.mark.parametrize("direction", ["hf -> ours", "ours -> hf"])
@pytest.mark.parametrize("name", list(BERT_SIZES))
def test_bert_parity(tmp_path, name, direction):
    sizes = {**BERT_SIZES[name], **BERT_NO_DROPOUT}
    torch.manual_seed(0)
    if direction == "hf -> ours":
        theirs = transformers.BertForSequenceClassification(transformers.BertConfig(**sizes))
        theirs.save_pretrained(tmp_path)
        ours = BertForSequenceClassification.from_pretrained(tmp_path)
    else:
        BertForSequenceClassification(BertClassifierConfig(**sizes)).save_pretrained(tmp_path)
        ours = BertForSequenceClassification.from_pretrained(tmp_path)
        theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
        assert type(theirs).__name__ == "BertForSequenceClassification"
    assert theirs.config.num_labels == ours.config.num_labels == sizes["num_labels"]
    ids, mask, labels = _batch(sizes["vocab_size"], 0, sizes["num_labels"])
    types = (torch.arange(ids.shape[1]) >= 6).long().expand_as(ids)
    diffs = _compare(
        ours.eval(),
        theirs.eval(),
        dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels),
    )
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("padding", ["right", "left", "both"])
@pytest.mark.parametrize("direction", ["hf -> ours", "ours -> hf"])
@pytest.mark.parametrize("name", list(GPT2_SIZES))
def test_gpt2_parity(tmp_path, name, direction, padding):
    sizes = {**GPT2_SIZES[name], **GPT2_NO_DROPOUT}
    pad = sizes["vocab_size"] - 1
    torch.manual_seed(0)
    if direction == "hf -> ours":
        theirs = transformers.GPT2ForSequenceClassification(
            transformers.GPT2Config(**sizes, pad_token_id=pad, attn_implementation="eager")
        )
        theirs.save_pretrained(tmp_path)
        ours = GPT2ForSequenceClassification.from_pretrained(tmp_path)
    else:
        GPT2ForSequenceClassification(
            GPT2ClassifierConfig(**sizes, pad_token_id=pad)
        ).save_pretrained(tmp_path)
        ours = GPT2ForSequenceClassification.from_pretrained(tmp_path)
        theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
        assert type(theirs).__name__ == "GPT2ForSequenceClassification"
    assert theirs.config.pad_token_id == ours.config.pad_token_id == pad
    ids, mask, labels = _batch(sizes["vocab_size"], pad, sizes["num_labels"], padding)
    diffs = _compare(
        ours.eval(),
        theirs.eval(),
        dict(input_ids=ids, attention_mask=mask, labels=labels),
        gpt2_to_hf,
    )
    assert max(diffs.values()) < TOL, diffs


def test_config_json_matches_transformers(tmp_path):
    BertForSequenceClassification(
        BertClassifierConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            id2label={0: "neg", 1: "mid", 2: "pos"},
        )
    ).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["id2label"] == {"0": "neg", "1": "mid", "2": "pos"} and d["label2id"] == {
        "neg": 0,
        "mid": 1,
        "pos": 2,
    }
    assert "num_labels" not in d and d["problem_type"] == "single_label_classification"
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.num_labels == 3 and hf.id2label == {0: "neg", 1: "mid", 2: "pos"}
    assert BertClassifierConfig.from_dict(d).num_labels == 3


def test_last_token_index_rule():
    rows = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0], [0, 5, 6, 7], [0, 0, 5, 0]])
    assert last_token_index(rows, 0, (rows != 0).long()).tolist() == [3, 1, 3, 2]
    assert last_token_index(rows[:1], None).tolist() == [3]


def test_backbone_directories_load_with_one_line(tmp_path, capsys):
    small = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    pre = BertForPreTraining(small)
    pre.save_pretrained(tmp_path / "bert")
    clf = BertForSequenceClassification.from_pretrained(tmp_path / "bert")
    out = capsys.readouterr().out.strip().splitlines()
    assert (
        len(out) == 1
        and "classifier.weight, classifier.bias" in out[0]
        and "cls.predictions" in out[0]
    )
    assert all(torch.equal(v, clf.bert.state_dict()[k]) for k, v in pre.bert.state_dict().items())
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=60, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    lm.save_pretrained(tmp_path / "gpt2")
    clf = GPT2ForSequenceClassification.from_pretrained(tmp_path / "gpt2", pad_token_id=59)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "score.weight" in out[0]
    assert all(
        torch.equal(v, clf.transformer.state_dict()[k])
        for k, v in lm.transformer.state_dict().items()
    )
    with pytest.raises(CheckpointError, match="not a fine-tuned"):
        BertForSequenceClassification.from_pretrained(tmp_path / "bert", new_head=False)


def test_anything_else_missing_or_misshaped_is_an_error(tmp_path):
    small = dict(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    BertForSequenceClassification(BertClassifierConfig(**small, num_labels=3)).save_pretrained(
        tmp_path / "three"
    )
    with pytest.raises(CheckpointError, match="mis-shaped"):
        BertForSequenceClassification.from_pretrained(tmp_path / "three", num_labels=2)
    BertForPreTraining(BertConfig(**small)).save_pretrained(tmp_path / "pre")
    with pytest.raises(CheckpointError, match="mis-shaped|missing"):  # a backbone of another size
        BertForSequenceClassification.from_pretrained(tmp_path / "pre", num_hidden_layers=2)


@pytest.mark.parametrize(
    "bad",
    [
        dict(num_labels=1),
        dict(num_labels=0),
        dict(num_labels=3, id2label={0: "a", 1: "b"}),
        dict(id2label={0: "a", 2: "b"}),
        dict(problem_type="regression"),
    ],
)
def test_bad_label_config(bad):
    with pytest.raises(ValueError):
        BertClassifierConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, **bad
        )


def test_labels_outside_range():
    for labels in (torch.tensor([0, 2]), torch.tensor([-100, 1]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
            classification_loss(torch.zeros(2, 2), labels)
    with pytest.raises(TypeError):
        classification_loss(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))


def test_gpt2_padding_without_pad_token_id():
    m = GPT2ForSequenceClassification(
        GPT2ClassifierConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ).eval()
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with pytest.raises(ValueError, match="pad_token_id"):
        m(ids, mask)
    with pytest.raises(ValueError, match="pad_token_id"):
        m(ids)  # several rows and no mask: may be padded
    assert m(ids, torch.ones_like(ids)).logits.shape == (2, 2)  # no padding: fine


def test_truncation_and_empty_texts():
    assert head_tail(list(range(20)), 8) == [0, 1, 14, 15, 16, 17, 18, 19]
    assert head_tail([3, 4], 8) == [3, 4]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    "Tiny BERT and GPT-2 pretraining runs, each fine-tuned with the tiny preset."
    from scratchformers.training import pretrain_bert, train_gpt2

    root = tmp_path_factory.mktemp("classify")
    cache = root / "cache"
    pretrain_bert("tiny", root / "bert", progress=False, cache_dir=cache)
    train_gpt2("tiny", root / "gpt2", progress=False, cache_dir=cache)
    results = {
        k: finetune(root / k, "tiny", root / f"{k}-imdb", progress=False, cache_dir=cache)
        for k in ("bert", "gpt2")
    }
    return root, results


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_tiny_finetune_and_classify(tiny_runs, kind):
    root, results = tiny_runs
    r = results[kind]
    assert (
        0.0 <= r.accuracy <= 1.0
        and r.history["eval"]
        and r.history["eval"][-1]["accuracy"] == r.accuracy
    )
    out = root / f"{kind}-imdb"
    assert model_kind(out) == (kind, True) and model_kind(root / kind) == (kind, False)
    answers = classify(out, ["A wonderful film.", "Dull, long and badly acted."])
    assert len(answers) == 2 and all(
        label in ("negative", "positive") and 0.5 <= p <= 1 for label, p in answers
    )
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor(encode_texts(["A wonderful film."], r.tokenizer, kind, r.max_length))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - r.model(ids).logits).abs().max() < TOL
    again = classify(out, "A wonderful film.")[0]
    assert again[0] == answers[0][0] and abs(again[1] - answers[0][1]) < 1e-6


def test_finetune_and_classify_refuse_wrong_directories(tiny_runs, tmp_path):
    root, _ = tiny_runs
    with pytest.raises(ValueError, match="already holds a fine-tuned classifier"):
        finetune(root / "bert-imdb", "tiny")
    with pytest.raises(ValueError, match="not a fine-tuned classifier"):
        classify(root / "gpt2", ["A fine film."])
    with pytest.raises(ValueError, match="unknown fine-tuning preset"):
        finetune(root / "bert", "huge")
    with pytest.raises(ValueError, match="empty"):
        classify(root / "bert-imdb", ["A fine film.", "  "])
    with pytest.raises(ValueError, match="max_length"):
        finetune(root / "bert", "tiny", max_length=10_000)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "t5", "architectures": ["T5Model"]})
    )
    with pytest.raises(ValueError, match="'t5'"):
        finetune(tmp_path, "tiny")


def test_presets_and_split():
    assert set(FINETUNE_PRESETS) == {"tiny", "pocket", "full"}
    from scratchformers.data import load_reviews

    few, pocket = labelled_reviews(30, 8), load_reviews("pocket")
    assert list(few["train"]["review_id"]) == pocket["train"]["review_id"][:30]
    assert list(few["validation"]["review_id"]) == pocket["validation"]["review_id"][:8]


def _same_fields(a, b):
    "Our output and transformers' have the same keys, and equal values by name and by position."
    assert list(a.keys()) == list(b.keys()), (list(a.keys()), list(b.keys()))
    for i, k in enumerate(a.keys()):
        x, y = a[k], b[i]
        if isinstance(x, torch.Tensor):
            assert (x - y).abs().max() < TOL, k
        else:  # hidden_states / attentions: tuples of tensors
            assert len(x) == len(y) and all((u - v).abs().max() < TOL for u, v in zip(x, y)), k


@pytest.mark.parametrize("extras", [{}, {"output_hidden_states": True, "output_attentions": True}])
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_outputs_index_like_transformers(tmp_path, kind, extras):
    torch.manual_seed(0)
    if kind == "bert":
        sizes = {**BERT_SIZES["4 heads of 8, 2 labels"], **BERT_NO_DROPOUT}
        pad, theirs = 0, transformers.BertForSequenceClassification(
            transformers.BertConfig(**sizes, attn_implementation="eager")
        )
        ours_cls, more = BertForSequenceClassification, {}
    else:
        sizes = {**GPT2_SIZES["5 heads of 6, 2 labels"], **GPT2_NO_DROPOUT}
        pad = sizes["vocab_size"] - 1
        theirs = transformers.GPT2ForSequenceClassification(
            transformers.GPT2Config(**sizes, pad_token_id=pad, attn_implementation="eager")
        )
        ours_cls, more = GPT2ForSequenceClassification, {"use_cache": False}
    theirs.save_pretrained(tmp_path)
    ours, theirs = ours_cls.from_pretrained(tmp_path), theirs.eval()
    ids, mask, labels = _batch(sizes["vocab_size"], pad, sizes["num_labels"], "right")
    with torch.no_grad():
        for batch in (dict(input_ids=ids, attention_mask=mask),
                      dict(input_ids=ids, attention_mask=mask, labels=labels)):
            a, b = ours(**batch, **extras), theirs(**batch, **extras, **more)
            _same_fields(a, b)
            want = {"loss", "logits"} if "labels" in batch else {"logits"}
            if extras:
                want |= {"hidden_states", "attentions"}
                n = sizes.get("num_hidden_layers", sizes.get("n_layer"))
                assert len(a.hidden_states) == n + 1 and len(a.attentions) == n
            assert set(a.keys()) == want and len(a) == len(want)
            t = ours(**batch, **extras, return_dict=False)
            assert isinstance(t, tuple) and len(t) == len(b.to_tuple()) == len(a.to_tuple())
            for x, y, z in zip(t, a.to_tuple(), b.to_tuple()):  # ours, ours by name, theirs
                x, y, z = [v if isinstance(v, tuple) else (v,) for v in (x, y, z)]
                assert len(x) == len(y) == len(z)
                assert all(torch.equal(u, v) and (u - w).abs().max() < TOL
                           for u, v, w in zip(x, y, z))
            with pytest.raises(KeyError, match="not set"):
                a["past_key_values" if kind == "gpt2" else "attentions" if not extras else "x"]
        with pytest.raises(TypeError, match="return_dict"):
            ours(ids, attention_mask=mask, return_dict="no")


def test_gpt2_classifier_returns_the_cache(tmp_path):
    torch.manual_seed(0)
    sizes = {**GPT2_SIZES["5 heads of 6, 2 labels"], **GPT2_NO_DROPOUT}
    pad = sizes["vocab_size"] - 1
    theirs = transformers.GPT2ForSequenceClassification(
        transformers.GPT2Config(**sizes, pad_token_id=pad, attn_implementation="eager")
    ).eval()
    theirs.save_pretrained(tmp_path)
    ours = GPT2ForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.randint(0, pad, (2, 7))
    with torch.no_grad():
        a, b = ours(ids, use_cache=True), theirs(ids)  # transformers caches by default
    assert list(a.keys()) == list(b.keys()) == ["logits", "past_key_values"]
    assert len(a.past_key_values) == sizes["n_layer"]
    for i, (k, v) in enumerate(a.past_key_values):
        layer = b.past_key_values.layers[i]
        assert (k - layer.keys).abs().max() < TOL and (v - layer.values).abs().max() < TOL
