"""Time the from-scratch byte-level BPE trainer against the Rust trainer of `tokenizers`, side by side.

Both train on the same cleaned IMDb training reviews with the same vocabulary size and min_frequency; the script
checks that they learned the same merges and prints the time ratio. Run from the repository root:

    .venv/bin/python benchmarks/bpe_training.py                      # 4,000 reviews, vocabulary 5,000
    .venv/bin/python benchmarks/bpe_training.py --n-reviews 22500 --vocab-size 50257   # the full GPT-2 size
"""
import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread each, a fair comparison

from scratchformers.corpus import clean_review, load_imdb, split_by_review
from scratchformers.tokenization import ByteLevelBPE, train_bytelevel_bpe


def rust_merges(tok):
    """The merges of a trained `tokenizers` BPE, as pairs of tokens."""
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-reviews", type=int, default=4000, help="training reviews to learn from (at most 22,500)")
    p.add_argument("--vocab-size", type=int, default=5000, help="vocabulary size, <|endoftext|> included")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each trainer; the best is kept")
    args = p.parse_args()

    train = split_by_review(load_imdb(), valid_fraction=0.1, seed=0)["train"]
    texts = [clean_review(t) for t in train["text"][: args.n_reviews]]
    print(f"{len(texts):,} reviews ({sum(map(len, texts)) / 1e6:.1f} M characters), vocab_size {args.vocab_size:,}, "
          f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}")

    times = {"tokenizers (Rust)": [], "scratchformers (Python)": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rust = train_bytelevel_bpe(texts, args.vocab_size, args.min_frequency, show_progress=False)
        times["tokenizers (Rust)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = ByteLevelBPE().train(texts, args.vocab_size, args.min_frequency)
        times["scratchformers (Python)"].append(time.perf_counter() - t0)

    same = ours.merges == rust_merges(rust) and ours.vocab == rust.get_vocab()
    best = {k: min(v) for k, v in times.items()}
    for name, t in best.items(): print(f"{name:<26} {t:8.2f} s")
    print(f"ratio (Python / Rust)      {best['scratchformers (Python)'] / best['tokenizers (Rust)']:8.2f}x")
    print(f"{len(ours.merges):,} merges; same merges, order and ids: {same}")


if __name__ == "__main__":
    main()
