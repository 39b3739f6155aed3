"""Chapter 2 (scratchformers.data): the split, NSP pairs, MLM masking, GPT-2 windows, caching and bad input.

Small tokenizers (vocabulary 1,500) trained on 1,000 reviews keep the whole file to a few tens of seconds.
"""
import collections
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import numpy as np
import pytest
import torch

from scratchformers.corpus import clean_review, split_sentences
from scratchformers.data import (MLMCollator, DataScale, SentenceTable, build_nsp_examples, get_scale,
                                 group_windows, load_reviews, nsp_pairs, pad_bert_batch, prepare_bert_data,
                                 prepare_gpt2_data, tokenize_documents, tokenize_sentences, truncate_pair)
from scratchformers.tokenization import GPT2_EOS, train_bytelevel_bpe

TINY = DataScale("tiny", n_reviews=1000, bert_vocab_size=1500, gpt2_vocab_size=1500, max_length=128, block_size=64)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scratchformers-cache")


@pytest.fixture(scope="module")
def reviews():
    return load_reviews(TINY, seed=0)


@pytest.fixture(scope="module")
def bert(cache_dir):
    return prepare_bert_data(TINY, cache_dir=cache_dir, seed=0)


@pytest.fixture(scope="module")
def gpt2(cache_dir):
    return prepare_gpt2_data(TINY, cache_dir=cache_dir, seed=0)


@pytest.fixture(scope="module")
def tokenized(bert, reviews):
    return tokenize_sentences(reviews["train"], bert.tokenizer)


@pytest.fixture(scope="module")
def examples(bert):
    """About 1,000 training pairs: well over 100k maskable tokens."""
    return bert.train.select(range(1000)).to_list()


# ---------------------------------------------------------------- the split
def test_split_by_review_no_review_or_sentence_on_both_sides(reviews):
    train, valid = reviews["train"], reviews["validation"]
    assert (len(train), len(valid)) == (900, 100)
    assert not set(train["review_id"]) & set(valid["review_id"])
    sents = {k: [set(split_sentences(clean_review(t))) for t in reviews[k]["text"]] for k in reviews}
    in_reviews = collections.Counter(s for k in sents for ss in sents[k] for s in ss)  # reviews holding each sentence
    shared = set().union(*sents["train"]) & set().union(*sents["validation"])
    assert all(in_reviews[s] > 1 for s in shared), "a sentence of a single review is on both sides"


def test_full_split_covers_imdb_once():
    split = load_reviews("full", seed=0)
    train, valid = set(split["train"]["review_id"]), set(split["validation"]["review_id"])
    assert not train & valid and len(train | valid) == 25_000 and len(valid) == 2_500


def test_scales():
    assert get_scale("full").n_reviews is None and get_scale("full").bert_vocab_size == 30522
    assert get_scale("full").gpt2_vocab_size == 50257 and get_scale("full").block_size == 1024
    pocket = get_scale("pocket")
    assert pocket.bert_vocab_size == pocket.gpt2_vocab_size == 8192 and pocket.block_size == 128
    assert get_scale(TINY) is TINY


# ---------------------------------------------------------------- NSP pairs
def _check_pair(ex, sentences, cls_id, sep_id, max_length):
    ids, types = ex["input_ids"], ex["token_type_ids"]
    assert 5 <= len(ids) <= max_length and len(types) == len(ids)
    seps = [i for i, t in enumerate(ids) if t == sep_id]
    assert ids[0] == cls_id and cls_id not in ids[1:] and len(seps) == 2 and seps[1] == len(ids) - 1
    assert 1 < seps[0] < seps[1] - 1, "an empty segment"
    assert types == [0] * (seps[0] + 1) + [1] * (len(ids) - seps[0] - 1)
    if ex["next_sentence_label"] == 0:
        assert (ex["b_review_id"], ex["b_start"]) == (ex["review_id"], ex["a_end"]), "B does not follow A"
    else:
        assert ex["b_review_id"] != ex["review_id"], "random B from A's own review"
    for seg, rid, s0, s1 in ((ids[1:seps[0]], ex["review_id"], ex["a_start"], ex["a_end"]),
                             (ids[seps[0] + 1:-1], ex["b_review_id"], ex["b_start"], ex["b_end"])):
        assert s0 < s1
        source = "," + ",".join(str(t) for s in sentences[rid][s0:s1] for t in s) + ","
        assert "," + ",".join(map(str, seg)) + "," in source, "segment is not a piece of the sentences it names"


def test_nsp_pairs(bert, tokenized):
    tok = bert.tokenizer
    sentences = dict(zip(tokenized["review_id"], tokenized["sentences"]))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    pairs = bert.train.to_list()
    assert sum(len(p["input_ids"]) for p in pairs) > 100_000
    for ex in pairs: _check_pair(ex, sentences, cls_id, sep_id, TINY.max_length)
    random_share = np.mean([ex["next_sentence_label"] for ex in pairs])
    assert abs(random_share - 0.5) < 0.02, f"{random_share:.3f} of the pairs have a random B"
    assert set(bert.train["review_id"]) == set(tokenized["review_id"]), "a review contributed no pair"
    lengths = np.array([len(ex["input_ids"]) for ex in pairs])
    assert np.mean(lengths == TINY.max_length) > 0.5, "pairs are not packed towards max_length"


def test_validation_pairs_use_validation_reviews_only(bert, reviews):
    valid = set(reviews["validation"]["review_id"])
    assert set(bert.validation["review_id"]) <= valid and set(bert.validation["b_review_id"]) <= valid


def test_short_max_length_truncates(bert, tokenized):
    small = tokenized.select(range(100))
    pairs = build_nsp_examples(small, bert.tokenizer, max_length=9, seed=1)
    sentences = dict(zip(small["review_id"], small["sentences"]))
    cls_id, sep_id = bert.tokenizer.token_to_id("[CLS]"), bert.tokenizer.token_to_id("[SEP]")
    for ex in pairs: _check_pair(ex, sentences, cls_id, sep_id, 9)


def test_same_seed_same_pairs(bert, tokenized):
    small = tokenized.select(range(200))
    a, b = (build_nsp_examples(small, bert.tokenizer, seed=3) for _ in range(2))
    assert a.to_dict() == b.to_dict()
    assert build_nsp_examples(small, bert.tokenizer, seed=4)["input_ids"] != a["input_ids"]


def _synthetic(lengths_per_review):
    """A tokenized dataset whose sentence i of review r holds tokens 1000*r + i (length as given)."""
    sentences = [[[1000 * r + i] * n for i, n in enumerate(lens)] for r, lens in enumerate(lengths_per_review)]
    return datasets.Dataset.from_dict({"review_id": list(range(len(sentences))), "sentences": sentences},
                                      features=datasets.Features({"review_id": datasets.Value("int64"),
                                          "sentences": datasets.List(datasets.List(datasets.Value("int32")))}))


def test_single_sentence_reviews_contribute_and_labels_stay_balanced():
    rng = random.Random(0)
    reviews = [[rng.randint(3, 30)] if r % 3 == 0 else [rng.randint(3, 30) for _ in range(rng.randint(2, 12))]
               for r in range(3000)]
    table = SentenceTable.from_dataset(_synthetic(reviews))
    pairs = list(nsp_pairs(table, range(len(table)), 64, random.Random(0)))
    single = {r for r, lens in enumerate(reviews) if len(lens) == 1}
    assert all(p.is_random for p in pairs if p.review in single), "a one-sentence chunk got a 'follows' B"
    assert {p.b_review for p in pairs if p.is_random} & single, "one-sentence reviews never serve as random B"
    assert {p.review for p in pairs} == set(range(len(reviews)))
    assert abs(np.mean([p.is_random for p in pairs]) - 0.5) < 0.02
    for p in pairs:
        assert p.a_start < p.a_end and p.b_start < p.b_end
        assert p.is_random == (p.b_review != p.review) and (p.is_random or p.b_start == p.a_end)


def test_pairing_is_linear_in_the_number_of_reviews():
    rng = random.Random(0)
    reviews = [[rng.randint(3, 40) for _ in range(rng.randint(1, 20))] for _ in range(16_000)]
    def cpu_seconds(n):
        table = SentenceTable.from_dataset(_synthetic(reviews[:n]))
        table.lengths, table.review_starts  # build the lists outside the timing
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            for _ in nsp_pairs(table, range(n), 128, random.Random(0)): pass
            best = min(best, time.process_time() - t)
        return best
    small, large = cpu_seconds(2_000), cpu_seconds(16_000)
    assert large / small < 16, f"8x the reviews took {large / small:.1f}x the time (quadratic would be 64x)"


def test_truncate_pair():
    rng = random.Random(0)
    for _ in range(2000):
        la, lb, m = rng.randint(1, 300), rng.randint(1, 300), rng.randint(2, 200)
        (a0, a1), (b0, b1) = truncate_pair((10, 10 + la), (500, 500 + lb), m, rng)
        assert 10 <= a0 < a1 <= 10 + la and 500 <= b0 < b1 <= 500 + lb
        assert (a1 - a0) + (b1 - b0) == min(la + lb, m)
        if la + lb - m > abs(la - lb): assert abs((a1 - a0) - (b1 - b0)) <= 1, "the longer one was not cut first"
        elif la + lb > m: assert min(a1 - a0, b1 - b0) == min(la, lb), "the shorter one was cut"
    fronts = [truncate_pair((0, 100), (0, 10), 20, rng)[0][0] for _ in range(500)]
    assert 30 < np.mean(fronts) < 60, "truncation is not front/back at random"


# ---------------------------------------------------------------- MLM masking
def _mask_counts(collator, examples, batch_size=64):
    c = collections.Counter()
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        plain, b = pad_bert_batch(chunk, collator.pad_id), collator(chunk)
        chosen = b["labels"] != -100
        maskable = plain["attention_mask"].bool() & ~collator.special[plain["input_ids"]]
        assert not (chosen & ~maskable).any(), "a special token or padding was chosen"
        assert torch.equal(b["labels"][chosen], plain["input_ids"][chosen])
        assert torch.equal(b["input_ids"][~chosen], plain["input_ids"][~chosen])
        for k in ("token_type_ids", "attention_mask", "next_sentence_label"): assert torch.equal(b[k], plain[k])
        changed = chosen & (b["input_ids"] != plain["input_ids"]) & (b["input_ids"] != collator.mask_id)
        assert not collator.special[b["input_ids"][changed]].any(), "a random replacement is a special token"
        assert (b["input_ids"][changed] < collator.special.numel()).all()
        c.update(maskable=int(maskable.sum()), chosen=int(chosen.sum()), changed=int(changed.sum()),
                 masked=int((chosen & (b["input_ids"] == collator.mask_id)).sum()),
                 kept=int((chosen & (b["input_ids"] == plain["input_ids"])).sum()))
    assert c["maskable"] >= 100_000
    return c


@pytest.mark.parametrize("whole_word", [False, True])
def test_mlm_statistics(bert, examples, whole_word):
    c = _mask_counts(MLMCollator(bert.tokenizer, whole_word=whole_word, seed=0), examples)
    assert abs(c["chosen"] / c["maskable"] - 0.15) < 0.005, c
    for k, share in (("masked", 0.8), ("changed", 0.1), ("kept", 0.1)):
        assert abs(c[k] / c["chosen"] - share) < 0.01, (k, c)


def test_special_tokens_are_the_five_bert_ones(bert):
    collator = bert.collator
    specials = {bert.tokenizer.id_to_token(i) for i in torch.nonzero(collator.special).flatten().tolist()}
    assert specials == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert len(collator.ordinary_ids) == bert.tokenizer.get_vocab_size() - 5


def test_whole_word_masks_words_as_units(bert, examples):
    collator = MLMCollator(bert.tokenizer, whole_word=True, seed=1)
    plain = pad_bert_batch(examples[:300], collator.pad_id)["input_ids"]
    chosen = collator(examples[:300])["labels"] != -100
    follows_word = collator.continuation[plain][:, 1:] & ~collator.special[plain][:, :-1]  # piece continuing a word
    assert follows_word.any()
    assert torch.equal(chosen[:, 1:][follows_word], chosen[:, :-1][follows_word])


def test_same_seed_same_batches_and_fresh_masks_each_epoch(bert, examples):
    a, b = MLMCollator(bert.tokenizer, seed=5), MLMCollator(bert.tokenizer, seed=5)
    for _ in range(3):
        x, y = a(examples[:32]), b(examples[:32])
        assert all(torch.equal(x[k], y[k]) for k in x)
    a.set_epoch(1)
    epoch1 = a(examples[:32])
    assert not torch.equal(epoch1["labels"], x["labels"])
    a.set_epoch(1)
    assert torch.equal(a(examples[:32])["input_ids"], epoch1["input_ids"])
    assert not torch.equal(MLMCollator(bert.tokenizer, seed=6)(examples[:32])["labels"], x["labels"])


def test_every_row_gets_a_prediction(bert):
    collator = MLMCollator(bert.tokenizer, seed=0)
    cls_id, sep_id = bert.tokenizer.token_to_id("[CLS]"), bert.tokenizer.token_to_id("[SEP]")
    short = [{"input_ids": [cls_id, 100 + i, sep_id, 200 + i, sep_id], "token_type_ids": [0, 0, 0, 1, 1],
              "next_sentence_label": 0} for i in range(50)]
    labels = collator(short)["labels"]
    assert ((labels != -100).sum(1) >= 1).all()


def test_batch_feeds_transformers_bert(bert):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=bert.tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=TINY.max_length)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    batch = bert.collator([bert.train[i] for i in range(16)])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"].shape[1] == max(len(bert.train[i]["input_ids"]) for i in range(16))
    with torch.no_grad(): out = model(**batch)
    assert torch.isfinite(out.loss)


def test_dataloader_with_workers_is_reproducible(bert):
    loader = lambda: torch.utils.data.DataLoader(bert.train.select(range(256)), batch_size=32, num_workers=2,
                                                 collate_fn=MLMCollator(bert.tokenizer, seed=0))
    first, second = list(loader()), list(loader())
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(first, second))


# ---------------------------------------------------------------- GPT-2 windows
def _documents(windows, tok):
    eos = tok.token_to_id(GPT2_EOS)
    stream = np.concatenate([np.asarray(w, dtype=np.int64) for w in windows["input_ids"]])
    return [tok.decode(p.tolist()) for p in np.split(stream, np.flatnonzero(stream == eos) + 1)]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_gpt2_windows_hold_their_split_only_with_eos_between_reviews(gpt2, reviews, split):
    windows = getattr(gpt2, split)
    assert set(map(len, windows["input_ids"])) == {TINY.block_size}
    docs = _documents(windows, gpt2.tokenizer)
    texts = [clean_review(t) for t in reviews[split]["text"]]
    assert len(docs) - 1 >= len(texts) - 1, "reviews are missing or not separated by <|endoftext|>"
    assert docs[:-1] == texts[:len(docs) - 1]
    assert texts[len(docs) - 1].startswith(docs[-1])
    other = {clean_review(t) for t in reviews["validation" if split == "train" else "train"]["text"]} - set(texts)
    assert not other & set(docs)


def test_gpt2_collate(gpt2):
    batch = gpt2.collate([gpt2.train[i] for i in range(8)])
    assert set(batch) == {"input_ids", "labels"} and batch["input_ids"].shape == (8, TINY.block_size)
    assert torch.equal(batch["input_ids"], batch["labels"]) and batch["input_ids"].dtype == torch.long
    with pytest.raises(ValueError, match="different lengths"):
        gpt2.collate([{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2]}])


# ---------------------------------------------------------------- caching
def test_second_call_loads_from_cache(bert, gpt2, cache_dir):
    t = time.time()
    again = prepare_bert_data(TINY, cache_dir=cache_dir, seed=0)
    assert time.time() - t < 10
    assert again.path == bert.path and again.tokenizer.to_str() == bert.tokenizer.to_str()
    assert again.train["input_ids"] == bert.train["input_ids"]
    g = prepare_gpt2_data(TINY, cache_dir=cache_dir, seed=0)
    assert g.path == gpt2.path and g.train["input_ids"][:20] == gpt2.train["input_ids"][:20]


def test_cache_key_depends_on_scale_and_seed(bert, cache_dir, tokenized):
    from dataclasses import replace
    other = prepare_bert_data(replace(TINY, n_reviews=200), cache_dir=cache_dir, seed=1)
    assert other.path != bert.path and len(other.train) < len(bert.train)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    from scratchformers.data import default_cache_dir
    monkeypatch.setenv("SCRATCHFORMERS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


# ---------------------------------------------------------------- bad input
def test_max_length_too_small(bert, tokenized):
    for n in (0, 4):
        with pytest.raises(ValueError, match="max_length"): build_nsp_examples(tokenized, bert.tokenizer, max_length=n)
        with pytest.raises(ValueError, match="max_length"): DataScale("bad", 100, max_length=n)


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.5])
def test_masking_probability_outside_0_1(bert, p):
    with pytest.raises(ValueError, match="mlm_probability"): MLMCollator(bert.tokenizer, mlm_probability=p)
    with pytest.raises(ValueError, match="mlm_probability"): prepare_bert_data(TINY, mlm_probability=p)


def test_tokenizer_without_mask():
    gpt2_tok = train_bytelevel_bpe(["a tiny corpus of text"] * 3, vocab_size=300, show_progress=False)
    with pytest.raises(ValueError, match=r"\[MASK\]"): MLMCollator(gpt2_tok)


def test_empty_inputs(bert, gpt2, tokenized):
    empty = datasets.Dataset.from_dict({"text": [], "review_id": []})
    with pytest.raises(ValueError, match="empty"): tokenize_sentences(empty, bert.tokenizer)
    with pytest.raises(ValueError, match="empty"): build_nsp_examples(tokenized.select([]), bert.tokenizer)
    with pytest.raises(ValueError, match="at least 2 reviews"): build_nsp_examples(tokenized.select([0]), bert.tokenizer)
    with pytest.raises(ValueError, match="empty"): tokenize_documents(empty, gpt2.tokenizer)
    with pytest.raises(ValueError, match="empty"): group_windows(datasets.Dataset.from_dict({"review_id": [], "input_ids": []}), 8)
    with pytest.raises(ValueError, match="empty"): bert.collator([])
    with pytest.raises(ValueError, match="empty"): gpt2.collate([])


def test_bad_scales():
    with pytest.raises(ValueError, match="unknown scale"): prepare_bert_data("huge")
    with pytest.raises(ValueError, match="n_reviews"): DataScale("bad", 0)
    with pytest.raises(ValueError, match="valid_fraction"): DataScale("bad", 100, valid_fraction=1.0)
    with pytest.raises(ValueError, match="block_size"): DataScale("bad", 100, block_size=1)


def test_gpt2_tokenizer_without_eos(bert, reviews):
    with pytest.raises(ValueError, match="endoftext"): tokenize_documents(reviews["train"].select(range(3)), bert.tokenizer)


# ---------------------------------------------------------------- reproducible data and its digest (issue 11)
def test_fresh_cache_gives_the_same_ids_and_digest(bert, gpt2, tmp_path):
    """Tokenizers are retrained in a new cache; the WordPiece one used to come out with permuted ids."""
    b = prepare_bert_data(TINY, cache_dir=tmp_path, seed=0)
    assert b.tokenizer.to_str() == bert.tokenizer.to_str()
    assert b.train["input_ids"] == bert.train["input_ids"] and b.digest == bert.digest
    g = prepare_gpt2_data(TINY, cache_dir=tmp_path, seed=0)
    assert g.tokenizer.to_str() == gpt2.tokenizer.to_str() and g.digest == gpt2.digest


def test_digest_names_tokenizer_and_data(bert, gpt2, cache_dir):
    from dataclasses import replace
    assert len(bert.digest) == 16 and int(bert.digest, 16) >= 0 and bert.digest != gpt2.digest
    assert prepare_bert_data(TINY, cache_dir=cache_dir, seed=0).digest == bert.digest
    assert prepare_bert_data(replace(TINY, max_length=64), cache_dir=cache_dir, seed=0).digest != bert.digest


def test_collate_and_collator_are_one_function_and_loader_batches(bert, gpt2):
    assert bert.collate is bert.collator and gpt2.collator is gpt2.collate
    b = next(iter(bert.loader(batch_size=8, shuffle=False)))
    assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    g = next(iter(gpt2.loader("validation", batch_size=4)))
    assert g["input_ids"].shape == (4, TINY.block_size) and torch.equal(g["input_ids"], g["labels"])
    with pytest.raises(ValueError, match="split must be"): bert.loader("test")


# ---------------------------------------------------------------- the cache is checked when read (issue 11)
SMALL = DataScale("small", n_reviews=40, bert_vocab_size=400, gpt2_vocab_size=400, max_length=32, block_size=16)


def _arrow_files(path):
    return sorted(path.rglob("*.arrow"))


def _truncate(path):
    f = _arrow_files(path)[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(path):
    f = _arrow_files(path)[0]
    data = bytearray(f.read_bytes())
    data[-200] ^= 0xFF
    f.write_bytes(bytes(data))


def _no_meta(path):
    (path / "meta.json").unlink()


def _bad_meta(path):
    (path / "meta.json").write_text("{ trunc")


def _missing_file(path):
    _arrow_files(path)[-1].unlink()


@pytest.mark.parametrize("damage", [_truncate, _flip, _no_meta, _bad_meta, _missing_file])
@pytest.mark.parametrize("prepare", [prepare_bert_data, prepare_gpt2_data])
def test_damaged_cache_is_rebuilt_once(prepare, damage, tmp_path, capsys):
    first = prepare(SMALL, cache_dir=tmp_path)
    path, digest, ids = first.path, first.digest, first.train.to_dict()["input_ids"]
    del first  # its Arrow files are memory-mapped: reading them after the damage below would crash
    damage(path)
    capsys.readouterr()
    again = prepare(SMALL, cache_dir=tmp_path)
    out = capsys.readouterr().out
    assert "is damaged" in out and "rebuilt" in out and str(path) in out
    assert again.path == path and again.digest == digest and again.train.to_dict()["input_ids"] == ids
    third = prepare(SMALL, cache_dir=tmp_path)
    assert "loaded from cache" in capsys.readouterr().out and third.digest == digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left aside


def test_ids_outside_the_vocabulary_are_caught(tmp_path):
    """Even with checksums that match (a hand-edited entry), token ids beyond the vocabulary are refused."""
    import json
    from scratchformers.data import _file_list, _load_verified
    first = prepare_gpt2_data(SMALL, cache_dir=tmp_path)
    vocab = first.tokenizer.get_vocab_size()
    splits = datasets.load_from_disk(str(first.path))
    bad = splits["train"].map(lambda ex: {"input_ids": [vocab + 5] + ex["input_ids"][1:]})
    shutil_dir = tmp_path / "edited"
    datasets.DatasetDict(train=bad, validation=splits["validation"]).save_to_disk(str(shutil_dir))
    meta = json.loads((first.path / "meta.json").read_text())
    (shutil_dir / "meta.json").write_text(json.dumps({**meta, "files": _file_list(shutil_dir)}))
    problem = _load_verified(shutil_dir, vocab)
    assert isinstance(problem, str) and "outside 0.." in problem


def test_damaged_tokenizer_is_retrained(tmp_path, capsys):
    first = prepare_bert_data(SMALL, cache_dir=tmp_path)
    tok, digest = first.tokenizer.to_str(), first.digest
    del first
    (tok_file,) = (tmp_path / "tokenizers").rglob("tokenizer.json")
    tok_file.write_text(tok_file.read_text()[:100])
    again = prepare_bert_data(SMALL, cache_dir=tmp_path)
    assert "is damaged" in capsys.readouterr().out
    assert again.tokenizer.to_str() == tok and again.digest == digest


def test_damaged_entry_that_cannot_be_moved_names_the_directory(tmp_path, monkeypatch):
    path = prepare_gpt2_data(SMALL, cache_dir=tmp_path).path
    _truncate(path)
    real = os.replace
    def refuse(src, dst):
        if ".damaged-" in str(dst): raise PermissionError(13, "Permission denied")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match=f"delete the directory {path}"):
        prepare_gpt2_data(SMALL, cache_dir=tmp_path)


def test_cache_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    for bad in (tmp_path / "file", ):
        with pytest.raises(NotADirectoryError, match=f"the data cache {bad} is a file"):
            prepare_gpt2_data(SMALL, cache_dir=bad)
    with pytest.raises(PermissionError, match=f"cannot write prepared data into the cache {tmp_path / 'file' / 'sub'}"):
        prepare_gpt2_data(SMALL, cache_dir=tmp_path / "file" / "sub")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: stand in for a read-only file system
        import errno, tempfile
        def erofs(*a, **k): raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(tempfile, "mkstemp", erofs)
    else: read_only.chmod(0o555)
    with pytest.raises(PermissionError, match=f"cannot write prepared data into the cache {read_only}"):
        prepare_gpt2_data(SMALL, cache_dir=read_only)


def test_a_complete_read_only_cache_is_still_read(tmp_path, monkeypatch):
    first = prepare_bert_data(SMALL, cache_dir=tmp_path)
    import tempfile
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    assert prepare_bert_data(SMALL, cache_dir=tmp_path).digest == first.digest


# ---------------------------------------------------------------- Ctrl-C during preparation (issue 11)
_PREPARE = """
import sys
from scratchformers.data import DataScale, prepare_bert_data
print("started", flush=True)
prepare_bert_data(DataScale("sig", n_reviews=4000, bert_vocab_size=4000), cache_dir=sys.argv[1])
print("finished", flush=True)
"""


def test_ctrl_c_stops_data_preparation(tmp_path):
    import signal, subprocess, sys
    from conftest import sigint_default
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_default)
    assert p.stdout.readline().strip() == "started"
    time.sleep(6)
    assert p.poll() is None, "preparation finished too soon to test an interrupt"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "KeyboardInterrupt" in err and "finished" not in out
    assert not [q for q in tmp_path.rglob("*") if q.name.startswith((".", "bert-"))], "a partial entry was left"


# ---------------------------------------------------------------- your own text (issue 12)
def test_read_texts(tmp_path):
    from scratchformers.data import read_texts
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\n  \nsecond doc\n\n\n\nthird\r\n")
    assert read_texts(tmp_path / "a.txt") == ["first doc\nstill first", "second doc", "third"]
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert read_texts(tmp_path / "b.jsonl") == ["one", "two"]
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.txt")): read_texts(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text(" \n\n\t\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty.txt'} holds no documents"): read_texts(tmp_path / "empty.txt")
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=rf"{tmp_path / 'c.jsonl'}, line 2: expected an object with a \"text\""):
        read_texts(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(ValueError, match="d.jsonl, line 2: not JSON"): read_texts(tmp_path / "d.jsonl")
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="reads .txt"): read_texts(tmp_path / "e.csv")


@pytest.fixture(scope="module")
def own_docs():
    """Raw IMDb reviews (with their <br /> tags), as a user's own documents."""
    from scratchformers.corpus import load_imdb
    return load_imdb().select(range(60))["text"]


def test_own_texts_gpt2(own_docs, tmp_path):
    from scratchformers.data import normalize_whitespace
    g = prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts=own_docs)
    assert g.path.name.startswith("gpt2-own-")
    docs = {k: _documents(getattr(g, k), g.tokenizer) for k in ("train", "validation")}
    text = "".join(docs["train"] + docs["validation"])
    assert "<br />" in text, "IMDb's cleaning was applied to foreign text"
    whole = [normalize_whitespace(t) for t in own_docs]
    assert set(docs["train"][:-1]) <= set(whole) and not set(docs["train"][:-1]) & set(docs["validation"][:-1])
    assert 2 <= len(docs["validation"]) - 1 + 1  # at least the two held-out documents start there
    again = prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts=own_docs)
    assert again.digest == g.digest and again.path == g.path
    other = prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts=own_docs[:-1])
    assert other.path != g.path and other.digest != g.digest


def test_own_texts_bert_with_a_given_tokenizer(own_docs, bert, tmp_path):
    b = prepare_bert_data(SMALL, cache_dir=tmp_path, texts=own_docs, tokenizer=bert.tokenizer)
    assert b.tokenizer is bert.tokenizer and not (tmp_path / "tokenizers").exists()
    assert not set(b.train["review_id"]) & set(b.validation["review_id"])
    assert set(b.train["review_id"]) | set(b.validation["review_id"]) <= set(range(len(own_docs)))
    assert len(set(b.validation["review_id"])) >= 2
    trained = prepare_bert_data(SMALL, cache_dir=tmp_path, texts=own_docs)
    assert trained.tokenizer.to_str() != bert.tokenizer.to_str() and trained.digest != b.digest
    assert trained.tokenizer.get_vocab_size() <= SMALL.bert_vocab_size


def test_own_texts_bad_input(own_docs, gpt2, tmp_path):
    with pytest.raises(TypeError, match="not a single string"): prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts="a doc")
    with pytest.raises(TypeError, match="document 2 is a NoneType"):
        prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts=["a", "b", None, "c", "d"])
    with pytest.raises(ValueError, match="need at least 4"):
        prepare_gpt2_data(SMALL, cache_dir=tmp_path, texts=["one", "two", "  ", "three"])
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        prepare_bert_data(SMALL, cache_dir=tmp_path, texts=own_docs, tokenizer="bert-base-uncased")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        prepare_bert_data(SMALL, cache_dir=tmp_path, texts=own_docs, tokenizer=gpt2.tokenizer)
    with pytest.raises(ValueError, match="no window of"):
        prepare_gpt2_data(DataScale("big", None, block_size=4096), cache_dir=tmp_path, texts=own_docs[:6],
                          tokenizer=gpt2.tokenizer)
