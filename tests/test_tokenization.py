"""scratchformers.tokenization: trained tokenizers load in transformers; the from-scratch BPE matches the Rust trainer."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import random
import unicodedata

import pytest

from scratchformers.corpus import clean_review, load_imdb
from scratchformers.tokenization import (BERT_SPECIAL_TOKENS, GPT2_EOS, ByteLevelBPE, bytes_to_unicode, load_tokenizer,
                                         pretokenize, save_tokenizer, train_bytelevel_bpe, train_wordpiece)


@pytest.fixture(scope="module")
def texts():
    ds = load_imdb()
    return [clean_review(t) for t in ds.select(range(0, 25_000, 25))["text"]]  # 1,000 reviews, both labels


@pytest.fixture(scope="module")
def wordpiece(texts):
    return train_wordpiece(texts, vocab_size=2000, show_progress=False)


@pytest.fixture(scope="module")
def bytelevel(texts):
    return train_bytelevel_bpe(texts, vocab_size=1500, show_progress=False)


def rust_merges(tok):
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def test_wordpiece_layout(wordpiece):
    assert [wordpiece.token_to_id(t) for t in BERT_SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert wordpiece.get_vocab_size() == 2000
    enc = wordpiece.encode("A Great Movie", "Awful.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and enc.tokens.count("[SEP]") == 2
    assert "great" in enc.tokens  # lower-cased
    sep = enc.tokens.index("[SEP]")
    assert enc.type_ids == [0] * (sep + 1) + [1] * (len(enc.tokens) - sep - 1)


def test_bytelevel_layout(bytelevel):
    assert bytelevel.get_vocab_size() == 1500 and bytelevel.token_to_id(GPT2_EOS) == 1499
    ids = bytelevel.encode("Hello" + GPT2_EOS).ids
    assert ids[-1] == 1499  # the special token is recognised in text, never added automatically
    assert bytelevel.encode("Hello").ids == ids[:-1]


@pytest.mark.parametrize("which", ["wordpiece", "bytelevel"])
def test_loads_in_transformers(which, request, tmp_path):
    from transformers import PreTrainedTokenizerFast
    tok = request.getfixturevalue(which)
    path = save_tokenizer(tok, tmp_path / which)
    assert path.name == "tokenizer.json" and path.is_file()
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    text = "It's a 10/10 film, honestly! Ünïcödé 😀"
    assert hf(text)["input_ids"] == tok.encode(text).ids
    assert load_tokenizer(path).encode(text).ids == load_tokenizer(path.parent).encode(text).ids == tok.encode(text).ids
    if which == "wordpiece":
        pair = hf("first part", "second part", return_token_type_ids=True)
        ref = tok.encode("first part", "second part")
        assert pair["input_ids"] == ref.ids and pair["token_type_ids"] == ref.type_ids


def test_load_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("train", [train_wordpiece, train_bytelevel_bpe,
                                   lambda texts, vocab_size, **kw: ByteLevelBPE().train(texts, vocab_size)])
def test_bad_input(train, texts):
    with pytest.raises(ValueError, match="empty corpus"):
        train([], vocab_size=1000, show_progress=False)
    with pytest.raises(TypeError, match="text 1 is a"):
        train(["a review", 3.5, "another"], vocab_size=1000, show_progress=False)
    with pytest.raises(TypeError, match="single string"):
        train("a review", vocab_size=1000, show_progress=False)
    with pytest.raises(ValueError, match="too small"):
        train(texts[:5], vocab_size=256, show_progress=False)


def test_byte_table():
    from tokenizers import pre_tokenizers
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table[32] == "Ġ" and table[10] == "Ċ" and table[65] == "A"


def test_pretokenize_matches_rust(texts):
    from tokenizers import pre_tokenizers
    rust, table = pre_tokenizers.ByteLevel(add_prefix_space=False), bytes_to_unicode()
    rng = random.Random(1)
    assigned = [c for c in range(0x30000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]  # Python's Unicode tables
    strings = texts[:200] + ["".join(chr(rng.choice(assigned)) if rng.random() < 0.7 else rng.choice(" \t\n'sa1!")
                                     for _ in range(rng.randrange(30))) for _ in range(500)]
    strings.append("".join(chr(c) + " " + chr(c) + chr(c) + "x" for c in assigned))  # every assigned character
    for s in strings:
        assert [p for p, _ in rust.pre_tokenize_str(s)] == ["".join(table[b] for b in p.encode()) for p in pretokenize(s)]


@pytest.mark.parametrize("n, vocab_size, min_frequency", [(300, 600, 2), (1000, 1500, 2), (200, 400, 1)])
def test_same_merges_and_ids_as_rust(texts, n, vocab_size, min_frequency):
    rust = train_bytelevel_bpe(texts[:n], vocab_size, min_frequency, show_progress=False)
    ours = ByteLevelBPE().train(texts[:n], vocab_size, min_frequency)
    assert ours.merges == rust_merges(rust)
    assert ours.vocab == rust.get_vocab()
    for t in texts[-100:] + [texts[0] + GPT2_EOS + texts[1]]:
        assert ours.encode(t) == rust.encode(t).ids
        assert ours.decode(ours.encode(t)) == t == rust.decode(rust.encode(t).ids, skip_special_tokens=False)


def test_tie_break_is_smallest_id_pair():
    """Three pairs of count 1: Rust takes the smallest pair of ids ('a' < 'Ġ' in id order), not the first seen or the smallest bytes."""
    rust = train_bytelevel_bpe([" c ab"], 258, min_frequency=1, show_progress=False)
    assert rust_merges(rust) == [("a", "b")] == ByteLevelBPE().train([" c ab"], 258, min_frequency=1).merges


def test_random_synthetic_corpora_match_rust():
    """Tiny alphabets make many ties and overlapping pairs (aaa): the hardest case for matching the merge order."""
    for seed in range(8):
        rng = random.Random(seed)
        texts = [" ".join("".join(rng.choice("aab") for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 20)))
                 for _ in range(rng.randint(5, 60))]
        vocab_size, mf = rng.randint(260, 400), rng.choice([1, 2])
        rust = train_bytelevel_bpe(texts, vocab_size, mf, show_progress=False)
        ours = ByteLevelBPE().train(texts, vocab_size, mf)
        assert ours.merges == rust_merges(rust), seed
        assert all(ours.encode(t) == rust.encode(t).ids for t in texts)


def _random_string(rng):
    pools = [" \t\n\r", "abcXYZ019'!?.,", "éüñß", "中文字符日本語", "😀👍🏽🎬", "\x00\x1b\x7f\x85\u200b\u3000"]
    return "".join(chr(rng.randrange(0x110000)) if rng.random() < 0.2 else rng.choice(rng.choice(pools))
                   for _ in range(rng.randrange(40)))


def test_roundtrip_any_string(texts):
    bpe = ByteLevelBPE().train(texts[:200], 400)
    rng = random.Random(0)
    for s in ["", " ", "\x00", "😀", "中文", "\ud800 lone surrogate", GPT2_EOS * 2] + [_random_string(rng) for _ in range(2000)]:
        assert bpe.decode(bpe.encode(s)) == s, repr(s)


def test_roundtrip_hypothesis(texts):
    """The same property with hypothesis (a test dependency, in requirements-dev.txt)."""
    import hypothesis
    from hypothesis import strategies as st
    bpe = ByteLevelBPE().train(texts[:200], 400)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text())
    def roundtrip(s):
        assert bpe.decode(bpe.encode(s)) == s
    roundtrip()


def test_decode_errors_and_partial_bytes(texts):
    bpe = ByteLevelBPE().train(texts[:50], 300)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bpe.decode([len(bpe)])
    with pytest.raises(TypeError, match="can only encode a str"):
        bpe.encode(b"bytes")
    first_byte_of_emoji = bpe.encode("😀")[:1]
    assert bpe.decode(first_byte_of_emoji) == "\ufffd"


def test_to_tokenizer_roundtrip(texts, tmp_path):
    bpe = ByteLevelBPE().train(texts[:300], 700)
    tok = load_tokenizer(save_tokenizer(bpe.to_tokenizer(), tmp_path))
    for t in texts[-50:] + ["x" + GPT2_EOS]:
        assert tok.encode(t).ids == bpe.encode(t)


# ---------------------------------------------------------------- reproducible training (issue 11)
_TRAIN_IN_A_FRESH_PROCESS = """
import hashlib, json, sys
from scratchformers.tokenization import train_bytelevel_bpe, train_wordpiece
texts = json.load(open(sys.argv[1]))
for train in (train_wordpiece, train_bytelevel_bpe):
    print(hashlib.sha256(train(texts, vocab_size=1200, show_progress=False).to_str().encode()).hexdigest())
"""


def _fresh_process_digests(texts, tmp_path):
    import subprocess, sys
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(texts))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _TRAIN_IN_A_FRESH_PROCESS, str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_same_texts_same_tokenizer_in_fresh_processes(texts, tmp_path):
    """Rust's WordPiece trainer numbers its ##-pieces in hash order, which changes from process to process."""
    first, second = (_fresh_process_digests(texts[:400], tmp_path) for _ in range(2))
    assert len(first) == 2 and first == second


def test_plain_rust_wordpiece_trainer_is_not_reproducible(texts):
    """The problem train_wordpiece solves: the plain trainer permutes ids even within one process."""
    from tokenizers import trainers
    from scratchformers.tokenization import _wordpiece_tokenizer
    def plain():
        tok = _wordpiece_tokenizer()
        tok.train_from_iterator(texts[:400], trainers.WordPieceTrainer(
            vocab_size=1200, show_progress=False, special_tokens=BERT_SPECIAL_TOKENS, continuing_subword_prefix="##"))
        return tok.get_vocab()
    runs = [plain() for _ in range(3)]
    assert any(r != runs[0] for r in runs[1:])
    assert train_wordpiece(texts[:400], 1200, show_progress=False).to_str() == \
        train_wordpiece(texts[:400], 1200, show_progress=False).to_str()


def test_wordpiece_pieces_are_ordinary_tokens(wordpiece):
    specials = [t.content for t in wordpiece.get_added_tokens_decoder().values()]
    assert specials == BERT_SPECIAL_TOKENS
    assert wordpiece.encode("unwatchable", add_special_tokens=False).tokens[1].startswith("##")
    assert wordpiece.decode(wordpiece.encode("an unwatchable film").ids) == "an unwatchable film"


# ---------------------------------------------------------------- input checks (issue 11)
@pytest.mark.parametrize("train", [train_wordpiece, train_bytelevel_bpe,
                                   lambda texts, vocab_size, **kw: ByteLevelBPE().train(texts, vocab_size)])
def test_blank_corpus_and_bad_numbers(train, texts):
    for blank in ([""], ["", "  ", "\n\t"]):
        with pytest.raises(ValueError, match="all empty or whitespace"):
            train(blank, vocab_size=1000, show_progress=False)
    with pytest.raises(TypeError, match="vocab_size must be an int, got 300.0"):
        train(texts[:5], vocab_size=300.0, show_progress=False)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        train(texts[:5], vocab_size=True, show_progress=False)


@pytest.mark.parametrize("train", [train_wordpiece, train_bytelevel_bpe])
def test_min_frequency_is_checked(train, texts):
    with pytest.raises(ValueError, match="min_frequency=-1"):
        train(texts[:5], vocab_size=1000, min_frequency=-1, show_progress=False)
    with pytest.raises(TypeError, match="min_frequency must be an int"):
        train(texts[:5], vocab_size=1000, min_frequency=2.5, show_progress=False)
    with pytest.raises(ValueError, match="min_frequency=-1"):
        ByteLevelBPE().train(texts[:5], 1000, min_frequency=-1)


def test_load_tokenizer_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_tokenizer(missing)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{bad / 'tokenizer.json'} is not a tokenizer file: it is not valid JSON"):
        load_tokenizer(bad)
    (bad / "tokenizer.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match=rf"{bad / 'tokenizer.json'} is not a tokenizer file that"):
        load_tokenizer(bad)
    (bad / "tokenizer.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(bad / "tokenizer.json")


def test_save_into_a_file_is_refused(wordpiece, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        save_tokenizer(wordpiece, tmp_path / "file")


# ---------------------------------------------------------------- transformers gets the special tokens (issue 12)
def test_autotokenizer_gets_bert_special_tokens(wordpiece, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    save_tokenizer(wordpiece, tmp_path, model_max_length=128)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    for hf in (AutoTokenizer.from_pretrained(tmp_path), PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        assert (hf.cls_token, hf.sep_token, hf.pad_token, hf.mask_token, hf.unk_token) == \
            ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
        assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
        assert hf.model_max_length == 128
        batch = hf(["a short one", "a much longer second text"], padding=True)
        assert batch["input_ids"][0][-1] == 0 and batch["attention_mask"][0][-1] == 0
        assert hf("A film.")["input_ids"] == wordpiece.encode("A film.").ids


def test_autotokenizer_gets_gpt2_eos(bytelevel, tmp_path):
    from transformers import AutoTokenizer
    save_tokenizer(bytelevel, tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    eos = bytelevel.token_to_id(GPT2_EOS)
    assert hf.eos_token == hf.bos_token == hf.unk_token == hf.pad_token == GPT2_EOS
    assert hf.eos_token_id == hf.pad_token_id == eos == bytelevel.get_vocab_size() - 1
    assert hf("Hello" + GPT2_EOS)["input_ids"] == bytelevel.encode("Hello" + GPT2_EOS).ids
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["eos_token"] == GPT2_EOS


# ---------------------------------------------------------------- Ctrl-C stops training (issue 11)
_TRAIN_FOREVER = """
import random, sys
from scratchformers.tokenization import train_bytelevel_bpe, train_wordpiece
train = {"wordpiece": train_wordpiece, "bpe": train_bytelevel_bpe}[sys.argv[1]]
rng = random.Random(0)
words = lambda n: " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)) for _ in range(n))
def texts():  # little text, so the feed is short, but 120,000 rare words: a Rust merge phase of many seconds
    yield from (words(20) for _ in range(6000))
    print("fed", flush=True)
train(texts(), vocab_size=200_000, min_frequency=1, show_progress=False)
print("finished", flush=True)
"""


@pytest.mark.parametrize("which", ["wordpiece", "bpe"])
def test_ctrl_c_stops_training(which):
    """SIGINT while Rust merges (the texts all read): training stops within seconds, with KeyboardInterrupt."""
    import signal, subprocess, sys, time
    from conftest import sigint_default
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", _TRAIN_FOREVER, which], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, preexec_fn=sigint_default)
    assert p.stdout.readline().strip() == "fed"
    time.sleep(2)
    assert p.poll() is None, "training finished too soon to test an interrupt"
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert "finished" not in out, "training ran to the end despite Ctrl-C"
    assert p.returncode != 0 and "tokenizer training was interrupted" in err, err[-500:]
    assert time.monotonic() - t < 5, "Ctrl-C waited for the trainer"
