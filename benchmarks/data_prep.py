"""Time chapter 2's data preparation on IMDb, and our MLM collator beside
`transformers`' on the same examples.

1. `prepare_bert_data` from nothing (a fresh cache directory): load and split
   IMDb, train the WordPiece tokenizer on the training reviews, tokenize every
   sentence (`encode_batch`), pair, save as Arrow. The target for the full
   train split (25,000 reviews) at length 128 is under 2 minutes on the 2-core
   development machine.
2. The same call again, which loads from the cache.
3. Masking and padding batches of 32: `MLMCollator` against
   `transformers.DataCollatorForLanguageModeling` (the reference; it draws its
   masks the same way, so the two do the same work), as a ratio.
Optionally (--stages) the time of each stage, and pairing on a quarter, half and
all of the reviews (linear time shows as a constant time per review); (--gpt2)
`prepare_gpt2_data` from nothing too. Run from the repository root:

    .venv/bin/python benchmarks/data_prep.py         # full scale, BERT
    .venv/bin/python benchmarks/data_prep.py --scale pocket --stages --gpt2
"""

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace

for k, v in dict(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
).items():
    os.environ.setdefault(k, v)

import datasets
import torch

from scratchformers.data import (
    MLMCollator,
    build_nsp_examples,
    get_scale,
    load_reviews,
    prepare_bert_data,
    prepare_gpt2_data,
    tokenize_sentences,
)
from scratchformers.corpus import clean_review
from scratchformers.tokenization import train_wordpiece

# the full train split at length 128 should prepare in under 2 minutes
BUDGET_S = 120


def timed(label, fn):
    """Run `fn`, print how long it took, return its result and the seconds."""
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<44} {dt:8.2f} s")
    return out, dt


def stages(scale, seed):
    """Each stage of the BERT pipeline on its own, and pairing on growing shares
    of the reviews."""
    print(f"stages ({scale.name}):")
    reviews, _ = timed(
        "load IMDb, split by review", lambda: load_reviews(scale, seed)
    )
    train = reviews["train"]
    tok, _ = timed(
        f"train WordPiece ({scale.bert_vocab_size:,}) on {len(train):,} "
        "reviews",
        lambda: train_wordpiece(
            (clean_review(t) for t in train["text"]),
            scale.bert_vocab_size,
            show_progress=False,
        ),
    )
    tokenized, _ = timed(
        "clean, split and tokenize sentences",
        lambda: tokenize_sentences(train, tok),
    )
    n = len(tokenized)
    for share in (4, 2, 1):
        part = tokenized.select(range(n // share))
        pairs, dt = timed(
            f"pair {len(part):,} reviews",
            lambda: build_nsp_examples(part, tok, scale.max_length, seed),
        )
        print(
            f"  {'':<44} {1e6 * dt / len(part):8.0f} us per review, "
            f"{len(pairs):,} pairs"
        )


def collate_speed(data, n_batches, batch_size=32):
    """Milliseconds per masked batch: ours and transformers'
    DataCollatorForLanguageModeling, same examples."""
    try:
        import transformers
    except ImportError:
        print(
            "transformers is not installed: no reference collator to "
            "compare with"
        )
        return
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=data.tokenizer,
        pad_token="[PAD]",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
    )
    hf = transformers.DataCollatorForLanguageModeling(
        hf_tok, mlm=True, mlm_probability=0.15, return_tensors="pt"
    )
    keys = ("input_ids", "token_type_ids", "next_sentence_label")
    rows = (
        data.train.select(range(min(len(data.train), n_batches * batch_size)))
        .select_columns(list(keys))
        .to_list()
    )
    batches = [
        rows[i : i + batch_size] for i in range(0, len(rows), batch_size)
    ]
    ours = MLMCollator(data.tokenizer, seed=0)
    torch.manual_seed(0)
    best = {}
    for name, fn in (
        ("scratchformers MLMCollator", ours),
        ("transformers DataCollatorForLanguageModeling", hf),
    ):
        fn(batches[0])  # warm up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            times.append(time.perf_counter() - t0)
        best[name] = 1e3 * min(times) / len(batches)
        print(f"  {name:<46} {best[name]:7.2f} ms per batch of {batch_size}")
    a, b = best.values()
    print(f"  ratio (ours / transformers)                    {a / b:7.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="full", help="pocket or full (default)")
    p.add_argument(
        "--n-reviews",
        type=int,
        default=None,
        help="override the scale's number of reviews",
    )
    p.add_argument(
        "--max-length", type=int, default=128, help="BERT input length"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache-dir",
        default=None,
        help=(
            "keep the prepared data here (default: a temporary directory, "
            "removed)"
        ),
    )
    p.add_argument(
        "--gpt2",
        action="store_true",
        help="also prepare the GPT-2 windows from nothing",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="also time each stage, and pairing on growing shares",
    )
    p.add_argument(
        "--collate-batches",
        type=int,
        default=100,
        help="batches for the collator comparison (0: skip)",
    )
    args = p.parse_args()

    scale = replace(get_scale(args.scale), max_length=args.max_length)
    if args.n_reviews:
        scale = replace(scale, n_reviews=args.n_reviews)
    root = args.cache_dir or tempfile.mkdtemp(prefix="scratchformers-bench-")
    print(
        f"{scale}\ncache: {root}; "
        f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    )
    datasets.disable_progress_bars()
    try:
        if args.stages:
            stages(scale, args.seed)
        print("end to end:")
        data, first = timed(
            "prepare_bert_data, from nothing",
            lambda: prepare_bert_data(scale, root, args.seed),
        )
        _, again = timed(
            "prepare_bert_data, from the cache",
            lambda: prepare_bert_data(scale, root, args.seed),
        )
        tokens = sum(map(len, data.train["input_ids"]))
        print(
            f"  {len(data.train):,} training pairs, {tokens:,} tokens; "
            f"{first:.1f} s from nothing "
            f"({'within' if first < BUDGET_S else 'OVER'} the {BUDGET_S} s "
            f"budget), {first / again:.0f}x faster cached"
        )
        if args.gpt2:
            g, _ = timed(
                "prepare_gpt2_data, from nothing",
                lambda: prepare_gpt2_data(scale, root, args.seed),
            )
            timed(
                "prepare_gpt2_data, from the cache",
                lambda: prepare_gpt2_data(scale, root, args.seed),
            )
            print(
                f"  {len(g.train):,} training windows of "
                f"{scale.block_size} tokens"
            )
        if args.collate_batches:
            print("collating (pad + mask):")
            collate_speed(data, args.collate_batches)
    finally:
        if not args.cache_dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
