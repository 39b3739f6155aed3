"""Time the from-scratch byte-level BPE trainer against the Rust trainer of
`tokenizers`, side by side.

Both train on the same cleaned IMDb training reviews with the same vocabulary
size and min_frequency; the script checks that they learned the same merges and
prints the time ratio. Run from the repository root:

    # 4,000 reviews, vocabulary 5,000
    .venv/bin/python benchmarks/bpe_training.py
    # the full GPT-2 size
    .venv/bin/python benchmarks/bpe_training.py --n-reviews 22500 \
        --vocab-size 50257
    # also: the cost of reproducible WordPiece
    .venv/bin/python benchmarks/bpe_training.py --wordpiece

With --wordpiece it also times `train_wordpiece` (two passes, so that the same
texts give the same ids) against the plain Rust WordPiece trainer (one pass, ids
permuted from run to run).
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one thread each, a fair comparison
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from scratchformers.corpus import clean_review, load_imdb, split_by_review
from scratchformers.tokenization import (
    BERT_SPECIAL_TOKENS,
    ByteLevelBPE,
    _wordpiece_tokenizer,
    _wordpiece_trainer,
    train_bytelevel_bpe,
    train_wordpiece,
)


def rust_merges(tok):
    """The merges of a trained `tokenizers` BPE, as pairs of tokens."""
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--n-reviews",
        type=int,
        default=4000,
        help="training reviews to learn from (at most 22,500)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=5000,
        help="vocabulary size, <|endoftext|> included",
    )
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed runs of each trainer; the best is kept",
    )
    p.add_argument(
        "--wordpiece",
        action="store_true",
        help="also time reproducible WordPiece against the plain trainer",
    )
    args = p.parse_args()

    train = split_by_review(load_imdb(), valid_fraction=0.1, seed=0)["train"]
    texts = [clean_review(t) for t in train["text"][: args.n_reviews]]
    print(
        f"{len(texts):,} reviews ({sum(map(len, texts)) / 1e6:.1f} M "
        f"characters), vocab_size {args.vocab_size:,}, "
        f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}"
    )

    times = {"tokenizers (Rust)": [], "scratchformers (Python)": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rust = train_bytelevel_bpe(
            texts, args.vocab_size, args.min_frequency, show_progress=False
        )
        times["tokenizers (Rust)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = ByteLevelBPE().train(texts, args.vocab_size, args.min_frequency)
        times["scratchformers (Python)"].append(time.perf_counter() - t0)

    same = ours.merges == rust_merges(rust) and ours.vocab == rust.get_vocab()
    best = {k: min(v) for k, v in times.items()}
    for name, t in best.items():
        print(f"{name:<26} {t:8.2f} s")
    print(
        "ratio (Python / Rust)      "
        f"{best['scratchformers (Python)'] / best['tokenizers (Rust)']:8.2f}x"
    )
    print(f"{len(ours.merges):,} merges; same merges, order and ids: {same}")
    if args.wordpiece:
        wordpiece(texts, args)


def wordpiece(texts, args):
    """Time train_wordpiece against one plain pass of the Rust WordPiece
    trainer; check which is reproducible."""

    def plain():
        tok = _wordpiece_tokenizer()
        tok.train_from_iterator(
            texts,
            _wordpiece_trainer(
                args.vocab_size, args.min_frequency, False, BERT_SPECIAL_TOKENS
            ),
        )
        return tok

    runs = {
        "plain Rust WordPiece": plain,
        "train_wordpiece": lambda: train_wordpiece(
            texts, args.vocab_size, args.min_frequency, show_progress=False
        ),
    }
    best, same = {}, {}
    for name, run in runs.items():
        times, vocabs = [], []
        for _ in range(max(2, args.repeat)):
            t0 = time.perf_counter()
            vocabs.append(run().to_str())
            times.append(time.perf_counter() - t0)
        best[name], same[name] = min(times), len(set(vocabs)) == 1
    for name, t in best.items():
        print(f"{name:<26} {t:8.2f} s   two runs identical: {same[name]}")
    print(
        "ratio (reproducible / plain) "
        f"{best['train_wordpiece'] / best['plain Rust WordPiece']:6.2f}x"
    )


if __name__ == "__main__":
    main()
