"""Training-step speed of our models against `transformers`, side by side in one
process.

For each model: the same weights (ours saved with `save_pretrained`, loaded by
`transformers` with attn_implementation="sdpa"), the same batches, steps
interleaved (alternating which goes first), in training mode (dropout on). A
step is forward, backward and AdamW. Both sides use the library's own optimizer,
`scratchformers.training.make_optimizer` (AdamW, decay on matrices only, the
fused kernel where PyTorch has one for the device), and the same precision:
fp32, or both forward passes under the same bf16 autocast (`--precision bf16`,
or `both` for the two side by side). Prints tokens/s, the ratio ours /
transformers, and the share of this machine's fp32 matmul throughput the step
achieves: model FLOPs / step time / the GFLOP/s of a GEMM measured in the same
run.

    # all four models, 3 timed steps each
    python benchmarks/train_step.py
    python benchmarks/train_step.py --models gpt2-pocket bert-pocket --steps 10
    # torch.compile, reported separately
    python benchmarks/train_step.py --models gpt2-pocket --compile
    # steadier on a machine shared with others
    python benchmarks/train_step.py --threads 1 --timer cpu
    # fp32 and bf16 autocast
    python benchmarks/train_step.py --models gpt2-pocket --precision both

Model FLOPs count the matmuls of the dense model (as in the PaLM paper's MFU):
per token, forward, 2 x (weights of every matmul, the tied output head included)
+ 4 x n_layer x T x C for attention; a training step is 3 x forward. The same
count is used for both implementations, so the ratio compares time only (our
BERT computes MLM logits at the masked positions only, a legitimate saving the
count does not credit).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

MODELS = {
    # name: (family, preset, batch size, sequence length)
    "gpt2-small": ("gpt2", "small", 4, 256),
    "gpt2-pocket": ("gpt2", "pocket", 16, 128),
    "bert-base": ("bert", "base", 8, 128),
    "bert-pocket": ("bert", "pocket", 32, 128),
}
# the pocket tokenizers' vocabulary (scratchformers.data.SCALES["pocket"])
POCKET_VOCAB = 8192


def gemm_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    "Best-of-`repeats` fp32 GFLOP/s of an (m, k) @ (k, n) matmul."
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best / 1e9


# --timer cpu: time.process_time (CPU seconds of this process, all its threads)
CLOCK = time.perf_counter


def _timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def build_gpt2(preset: str, B: int, T: int, impl: str):
    """Ours and transformers' GPT-2 with the same weights, a batch maker and the
    model FLOPs of a step."""
    import transformers
    from scratchformers.gpt2 import GPT2Config, GPT2LMHeadModel

    cfg = (
        GPT2Config.small(attn_implementation=impl)
        if preset == "small"
        else GPT2Config.pocket(
            vocab_size=POCKET_VOCAB,
            eos_token_id=0,
            bos_token_id=0,
            attn_implementation=impl,
        )
    )
    ours = GPT2LMHeadModel(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(
            d, attn_implementation="sdpa"
        )
    g = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
        return {"input_ids": ids, "labels": ids}

    C, L = cfg.n_embd, cfg.n_layer
    per_token = (
        2 * (L * (4 * C * C + 2 * C * cfg.inner_dim) + C * cfg.vocab_size)
        + 4 * L * T * C
    )
    return ours, theirs, batch, 3 * per_token * B * T, (B * T, C, cfg.inner_dim)


def build_bert(preset: str, B: int, T: int, impl: str):
    """Ours and transformers' BERT (pre-training heads) with the same weights, a
    batch maker and the step FLOPs."""
    import transformers
    from scratchformers.bert import BertConfig, BertForPreTraining

    cfg = (
        BertConfig.base(attn_implementation=impl)
        if preset == "base"
        else BertConfig.pocket(
            vocab_size=POCKET_VOCAB, attn_implementation=impl
        )
    )
    ours = BertForPreTraining(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.BertForPreTraining.from_pretrained(
            d, attn_implementation="sdpa"
        )
    g = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(5, cfg.vocab_size, (B, T), generator=g)
        # padded like real batches
        lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
        am = (torch.arange(T)[None] < lengths[:, None]).long()
        ids = ids.masked_fill(am == 0, 0)
        types = (
            (torch.arange(T)[None] >= (lengths[:, None] // 2)) & (am == 1)
        ).long()
        masked = (torch.rand(B, T, generator=g) < 0.15) & (am == 1)
        labels = ids.masked_fill(~masked, -100)
        return {
            "input_ids": ids.masked_fill(masked, 4),
            "token_type_ids": types,
            "attention_mask": am,
            "labels": labels,
            "next_sentence_label": torch.randint(0, 2, (B,), generator=g),
        }

    C, L, I, V = (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.intermediate_size,
        cfg.vocab_size,
    )
    per_token = (
        2 * (L * (4 * C * C + 2 * C * I) + C * C + C * V) + 4 * L * T * C
    )
    return ours, theirs, batch, 3 * per_token * B * T, (B * T, C, I)


def make_step(model, optimizer, extra: dict, precision: str):
    """One training step (forward, backward, AdamW) on a batch, the forward pass
    under `precision`'s autocast."""
    from scratchformers.training import autocast

    device = next(model.parameters()).device

    def step(batch):
        with autocast(device, precision):
            loss = model(**batch, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def run(name: str, args, precision: str = "fp32") -> dict:
    family, preset, B, T = MODELS[name]
    B, T = args.batch_size or B, args.seq_len or T
    torch.manual_seed(0)
    build = build_gpt2 if family == "gpt2" else build_bert
    ours, theirs, batch, flops, gemm_shape = build(
        preset, B, T, args.attn_implementation
    )
    ours.train(), theirs.train()
    if args.compile:
        ours, theirs = torch.compile(ours), torch.compile(theirs)
    ours_extra = {"labelled_only": True} if family == "bert" else {}
    from scratchformers.training import TrainConfig, make_optimizer

    # the same optimizer for both
    opt_cfg = TrainConfig(lr=1e-4, weight_decay=0.01)
    steps = {
        "ours": make_step(
            ours, make_optimizer(ours, opt_cfg), ours_extra, precision
        ),
        "transformers": make_step(
            theirs, make_optimizer(theirs, opt_cfg), {}, precision
        ),
    }
    gemm = gemm_gflops(*gemm_shape)
    times = {k: [] for k in steps}
    batches = [batch() for _ in range(args.warmup + args.steps)]
    for i, b in enumerate(batches):
        # alternate who goes first
        order = list(steps) if i % 2 == 0 else list(steps)[::-1]
        for k in order:
            t = _timed(lambda: steps[k](b))
            if i >= args.warmup:
                times[k].append(t)
    # measured before and after the steps
    gemm = max(gemm, gemm_gflops(*gemm_shape))
    res = {
        "model": name,
        "batch": f"{B}x{T}",
        "gemm_gflops": gemm,
        "precision": precision,
    }
    for k, ts in times.items():
        t = statistics.median(ts)
        res[k] = {
            "s_per_step": t,
            "tokens_per_s": B * T / t,
            "share_of_gemm": flops / t / 1e9 / gemm,
        }
    res["ratio"] = (
        res["ours"]["tokens_per_s"] / res["transformers"]["tokens_per_s"]
    )
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=list(MODELS)
    )
    p.add_argument(
        "--steps",
        type=int,
        default=3,
        help="timed steps per model and implementation (median reported)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="override the model's default batch size",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="override the model's default sequence length",
    )
    p.add_argument(
        "--attn-implementation",
        default="sdpa",
        choices=["sdpa", "eager"],
        help="ours (theirs: sdpa)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile both models (slow to compile)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "both"],
        help=(
            "fp32, bf16 autocast (weights and AdamW stay "
            "fp32) for both implementations, or both"
        ),
    )
    p.add_argument(
        "--timer",
        default="wall",
        choices=["wall", "cpu"],
        help=(
            "wall clock, or CPU time of this process "
            "(steadier on a shared machine; use with --threads 1)"
        ),
    )
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.timer == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from scratchformers.training import _fused_supported, precision_report

    fused = _fused_supported([torch.zeros(1)])
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}"
        f", {torch.get_num_threads()} threads, {args.timer} time, "
        f"{'torch.compile' if args.compile else 'eager mode (not compiled)'}"
        f"; ours: attn {args.attn_implementation}, transformers: attn sdpa; "
        f"both: make_optimizer (AdamW, {'fused' if fused else 'not fused'} "
        "on CPU)"
    )
    print(precision_report("cpu"))
    precisions = (
        ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    )
    head = (
        f"{'model':12s} {'prec':>4s} {'batch':>7s} {'GEMM GF/s':>9s} | "
        f"{'ours tok/s':>10s} {'s/step':>7s} {'share':>6s} | "
        f"{'HF tok/s':>10s} {'s/step':>7s} {'share':>6s} | {'ours/HF':>7s}"
    )
    print(head)
    print("-" * len(head))
    for name in args.models:
        by_precision = {}
        for precision in precisions:
            r = by_precision[precision] = run(name, args, precision)
            o, t = r["ours"], r["transformers"]
            print(
                f"{r['model']:12s} {precision:>4s} {r['batch']:>7s} "
                f"{r['gemm_gflops']:9.0f} | {o['tokens_per_s']:10.0f} "
                f"{o['s_per_step']:7.3f} {o['share_of_gemm']:6.1%} | "
                f"{t['tokens_per_s']:10.0f} {t['s_per_step']:7.3f} "
                f"{t['share_of_gemm']:6.1%} | {r['ratio']:6.2f}x",
                flush=True,
            )
        if len(by_precision) == 2:
            a, b = by_precision["fp32"], by_precision["bf16"]
            gain = {
                k: b[k]["tokens_per_s"] / a[k]["tokens_per_s"]
                for k in ("ours", "transformers")
            }
            print(
                f"{name:12s} bf16 / fp32 tokens/s: ours {gain['ours']:.2f}x, "
                f"transformers {gain['transformers']:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
