"""Decoding speed: our `generate` with and without the KV cache, and
`transformers`' `generate`, same weights.

Greedy decoding, no end-of-text stop, so every run produces exactly
`--new-tokens` tokens. Two workloads: `--batch` prompts of one length, and a
left-padded batch of `--padded-batch` prompts of different lengths (from half of
`--prompt-len` to all of it) with its attention mask, where both libraries take
the positions from the mask (0 skips it). By default the model is a pocket-sized
GPT-2 (4 layers, 256 wide) with random weights (speed does not depend on them);
`--model-dir` loads a saved one instead (e.g. book/_artifacts/gpt2-pocket after
chapter 6). Each configuration runs `--repeats` times and the fastest run
counts. On a machine that other programs share, pass `--threads 1`: with its
default threads PyTorch's small operations wait on each other and the timings
become noise. Examples:

    # pocket GPT-2, 200 new tokens
    python benchmarks/generation.py --threads 1
    # GPT-2 small shapes
    python benchmarks/generation.py --threads 1 --vocab-size 50257 \
        --n-layer 12 --n-embd 768 --n-head 12 --n-positions 1024 \
        --new-tokens 30 --repeats 1
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers

from scratchformers.generation import generate, left_pad
from scratchformers.gpt2 import GPT2LMHeadModel


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--new-tokens", type=int, default=200, help="tokens to generate per run"
    )
    p.add_argument(
        "--prompt-len", type=int, default=16, help="tokens in each prompt"
    )
    p.add_argument(
        "--batch", type=int, default=1, help="prompts decoded together"
    )
    p.add_argument(
        "--padded-batch",
        type=int,
        default=8,
        help="prompts of different lengths, left-padded",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per configuration; the fastest counts",
    )
    p.add_argument(
        "--uncached-repeats",
        type=int,
        default=1,
        help="runs without the cache (slow)",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="a saved GPT-2 directory (default: random pocket model)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=8192,
        help="vocabulary of the random model",
    )
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-positions", type=int, default=256)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's choice)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def load_models(args, workdir):
    "The same weights as a `transformers` model and as ours, both in eval mode."
    if args.model_dir is None:
        torch.manual_seed(args.seed)
        config = transformers.GPT2Config(
            vocab_size=args.vocab_size,
            n_positions=args.n_positions,
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
        )
        transformers.GPT2LMHeadModel(config).save_pretrained(workdir)
        args.model_dir = workdir
    hf = transformers.GPT2LMHeadModel.from_pretrained(args.model_dir).eval()
    # never stop early: every run makes exactly --new-tokens tokens
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    ours = GPT2LMHeadModel.from_pretrained(args.model_dir)
    ours.config.eos_token_id = None
    return hf, ours


def padded_prompts(args, vocab_size, g):
    """`--padded-batch` prompts of lengths spread over [prompt_len / 2,
    prompt_len], left-padded, and their mask."""
    B, T = args.padded_batch, args.prompt_len
    lengths = torch.linspace(max(T // 2, 1), T, B).round().long().tolist()
    seqs = [
        torch.randint(1, vocab_size, (n,), generator=g).tolist()
        for n in lengths
    ]
    return left_pad(seqs, pad_token_id=0)


def best_time(fn, repeats):
    "The fastest of `repeats` runs of `fn`, in seconds, and its result."
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as workdir:
        hf, ours = load_models(args, workdir)
    cfg = ours.config
    if args.prompt_len + args.new_tokens > cfg.n_positions:
        raise SystemExit(
            "--prompt-len + --new-tokens = "
            f"{args.prompt_len + args.new_tokens} exceeds the model's "
            f"n_positions={cfg.n_positions}; ask for fewer tokens"
        )
    g = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(
        0, cfg.vocab_size, (args.batch, args.prompt_len), generator=g
    )
    n = args.new_tokens
    print(
        f"GPT-2 {cfg.n_layer} layers x {cfg.n_embd} wide, vocab "
        f"{cfg.vocab_size}; batch {args.batch}, "
        f"prompt {args.prompt_len} tokens, {n} new tokens, greedy; torch "
        f"{torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    runs = {
        "ours, KV cache": (lambda: generate(ours, prompt, n), args.repeats),
        "ours, no cache": (
            lambda: generate(ours, prompt, n, use_cache=False),
            args.uncached_repeats,
        ),
        "transformers, KV cache": (
            lambda: hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n,
                do_sample=False,
            ),
            args.repeats,
        ),
    }
    padded = {}
    if args.padded_batch:
        ids, mask = padded_prompts(args, cfg.vocab_size, g)
        padded = {
            "ours, padded batch": (
                lambda: generate(ours, ids, n, attention_mask=mask),
                args.repeats,
            ),
            "transformers, padded batch": (
                lambda: hf.generate(
                    ids, attention_mask=mask, max_new_tokens=n, do_sample=False
                ),
                args.repeats,
            ),
        }
    # warm up
    (
        generate(ours, prompt, 8),
        hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8
        ),
    )
    results, padded_results = {}, {}
    with torch.inference_mode():
        for name, (fn, repeats) in runs.items():
            results[name] = best_time(fn, repeats)
        for name, (fn, repeats) in padded.items():
            padded_results[name] = best_time(fn, repeats)
    outputs = [out for _, out in results.values()]
    same = all(torch.equal(outputs[0], o) for o in outputs[1:])

    base = results["ours, KV cache"][0]
    print(
        f"\n{'':24s} {'tokens/s':>10s} {'ms/token':>10s} "
        f"{'time vs ours+cache':>20s}"
    )
    for name, (secs, _) in results.items():
        tokens = n * args.batch
        print(
            f"{name:24s} {tokens / secs:10.0f} {1e3 * secs / n:10.2f} "
            f"{secs / base:19.2f}x"
        )
    print(
        f"\nthe KV cache is {results['ours, no cache'][0] / base:.1f}x "
        "faster than no cache; transformers' generate takes "
        f"{results['transformers, KV cache'][0] / base:.2f}x our time; "
        f"all outputs identical: {same}"
    )
    if padded_results:
        mine, theirs = (
            padded_results["ours, padded batch"],
            padded_results["transformers, padded batch"],
        )
        lengths = mask.sum(-1).tolist()
        print(
            f"\nleft-padded batch of {args.padded_batch} prompts "
            f"({min(lengths)}-{max(lengths)} tokens), {n} new tokens each:"
        )
        for name, (secs, _) in padded_results.items():
            print(
                f"{name:28s} {n * args.padded_batch / secs:10.0f} "
                f"tokens/s {1e3 * secs / n:10.2f} ms/step"
            )
        print(
            f"transformers' generate takes {theirs[0] / mine[0]:.2f}x "
            "our time on the padded batch; "
            f"outputs identical: {torch.equal(mine[1], theirs[1])}"
        )


if __name__ == "__main__":
    main()
