"""Which pocket recipe learns most per CPU minute? Train several recipes at the
same CPU budget.

Every recipe trains the pocket model family on the pocket data (chapter 2's
cache) for as many steps as fit in `--budget` CPU minutes, with a learning-rate
schedule planned for exactly those steps (a short probe measures the CPU seconds
per step first). Time is the CPU time of this process (`time.process_time`), not
the wall clock, so a recipe's result does not depend on what else the machine
was doing; run with `--threads 1` and the CPU time equals the wall time of an
otherwise idle core. Evaluations (on a fixed slice of the held-out data) are
included in the time.

    python benchmarks/recipe_study.py gpt2 --budget 3 \
        --out book/recorded/recipe-study
    python benchmarks/recipe_study.py bert --budget 4 \
        --out book/recorded/recipe-study
    # some recipes only
    python benchmarks/recipe_study.py gpt2 --only baseline lr-2e-3

Writes `<out>/<family>.json` (after every recipe, atomically): for each recipe
its settings, the steps it got, its evaluation history against CPU seconds and
its final held-out metrics, plus the machine, torch version and command.
"""

import argparse
import copy
import json
import os
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from scratchformers import training  # noqa: E402
from scratchformers.checks import atomic_write_text  # noqa: E402
from scratchformers.data import MLMCollator, get_scale  # noqa: E402
from scratchformers.tokenization import GPT2_EOS  # noqa: E402
from scratchformers.recipes import FAMILIES, RunPreset  # noqa: E402
from scratchformers.recipes import recipe_config  # noqa: E402
from scratchformers.training import (  # noqa: E402
    count_parameters,
    cpu_model,
    train,
)

# Each recipe: what it changes from the study's base (STUDY_BASE below: the
# pocket presets as they were when the study began; TrainConfig fields under
# "train", model config fields under "model", data scale fields under "data"),
# and why it is worth trying.
RECIPES = {
    "gpt2": {
        "baseline": dict(
            why="the pocket preset as it was (lr 1e-3, batch 4, 4 x 256)"
        ),
        "lr-2e-3": dict(train=dict(lr=2e-3), why="twice the learning rate"),
        "lr-5e-4": dict(train=dict(lr=5e-4), why="half the learning rate"),
        "lr-3e-3-batch-8": dict(
            train=dict(lr=3e-3, batch_size=8),
            why="larger batches, fewer steps, higher lr",
        ),
        "batch-2": dict(
            train=dict(lr=1e-3, batch_size=2, warmup_steps=100),
            why="smaller batches, more steps",
        ),
        "2-layers": dict(
            train=dict(lr=2e-3),
            model=dict(n_layer=2),
            why="half the depth: more steps per minute",
        ),
        "6x192": dict(
            train=dict(lr=2e-3),
            model=dict(n_layer=6, n_embd=192, n_head=4),
            why="deeper and narrower",
        ),
        "lr-2e-3-no-decay-end": dict(
            train=dict(lr=2e-3, min_lr_ratio=0.0, warmup_steps=20),
            why="short warm-up, cosine all the way to 0",
        ),
        "4x128": dict(
            train=dict(lr=2e-3),
            model=dict(n_embd=128, n_head=2),
            why="half the width: a quarter of the work per layer",
        ),
        "4x128-lr-1e-3": dict(
            train=dict(lr=1e-3),
            model=dict(n_embd=128, n_head=2),
            why="half the width at the baseline lr",
        ),
        "vocab-4096": dict(
            data=dict(gpt2_vocab_size=4096),
            why=(
                "a BPE of 4,096 pieces: a cheaper output layer, shorter tokens"
            ),
        ),
        "vocab-2048": dict(
            data=dict(gpt2_vocab_size=2048), why="a BPE of 2,048 pieces"
        ),
        "4x128-vocab-4096": dict(
            train=dict(lr=1e-3),
            model=dict(n_embd=128, n_head=2),
            data=dict(gpt2_vocab_size=4096),
            why="half the width and a BPE of 4,096 pieces",
        ),
        "4x128-eager": dict(
            train=dict(lr=1e-3),
            model=dict(n_embd=128, n_head=2, attn_implementation="eager"),
            why=(
                "half the width, attention written out "
                "(faster than the fused kernel on a CPU)"
            ),
        ),
        "4x128-betas-0.99": dict(
            train=dict(lr=1e-3, adam_betas=(0.9, 0.99)),
            model=dict(n_embd=128, n_head=2),
            why="half the width, Adam beta2 0.99 instead of 0.95",
        ),
        "4x128-lr-4e-3-init-0.05": dict(
            train=dict(lr=4e-3, warmup_steps=200),
            model=dict(n_embd=128, n_head=2, initializer_range=0.05),
            why=(
                "half the width, 4x the lr (200 warm-up steps), weights "
                "drawn with std 0.05 instead of 0.02"
            ),
        ),
        "4x128-1-head-lr-5e-3-betas-0.99": dict(
            train=dict(lr=5e-3, warmup_steps=300, adam_betas=(0.9, 0.99)),
            model=dict(
                n_embd=128,
                n_head=1,
                attn_implementation="eager",
                initializer_range=0.05,
            ),
            why=(
                "half the width, one head, attention written out, 5x the lr "
                "(300 warm-up steps), beta2 0.99, std 0.05"
            ),
        ),
        "4x128-eager-context-256": dict(
            train=dict(lr=1e-3, batch_size=2),
            model=dict(n_embd=128, n_head=2, attn_implementation="eager"),
            data=dict(block_size=256),
            why=(
                "as above with windows of 256 tokens (2 a batch: the "
                "same tokens a step)"
            ),
        ),
    },
    "bert": {
        "baseline": dict(
            why="the pocket preset as it was (lr 5e-4, batch 16, 4 x 256)"
        ),
        "lr-1e-3-warm-10%": dict(
            train=dict(lr=1e-3, warmup_ratio=0.1),
            why="twice the lr with a longer warm-up",
        ),
        "batch-8": dict(
            train=dict(batch_size=8), why="smaller batches, more steps"
        ),
        "batch-32-lr-1e-3": dict(
            train=dict(batch_size=32, lr=1e-3),
            why="larger batches, fewer steps, higher lr",
        ),
        "2-layers": dict(
            train=dict(lr=1e-3),
            model=dict(num_hidden_layers=2),
            why="half the depth: more steps per minute",
        ),
        "betas-0.98": dict(
            train=dict(lr=1e-3, adam_betas=(0.9, 0.98), warmup_ratio=0.06),
            why="RoBERTa's Adam beta2 0.98 and 6 % warm-up",
        ),
        "lr-7e-4": dict(train=dict(lr=7e-4), why="a little more learning rate"),
        "4x128": dict(
            train=dict(lr=1e-3, warmup_ratio=0.1),
            model=dict(
                hidden_size=128, num_attention_heads=2, intermediate_size=512
            ),
            why="half the width: a quarter of the work per layer",
        ),
        "4x128-batch-8": dict(
            train=dict(lr=1e-3, warmup_ratio=0.1, batch_size=8),
            model=dict(
                hidden_size=128, num_attention_heads=2, intermediate_size=512
            ),
            why="half the width, smaller batches",
        ),
        "2-layers-mask-30%": dict(
            train=dict(lr=1e-3),
            model=dict(num_hidden_layers=2),
            mlm=0.3,
            why=(
                "2 layers, 30 % of the tokens masked in training "
                "(evaluated at 15 %)"
            ),
        ),
        "2-layers-mask-40%": dict(
            train=dict(lr=1e-3),
            model=dict(num_hidden_layers=2),
            mlm=0.4,
            why="2 layers, 40 % masked in training (Wettig et al. 2023)",
        ),
        "2-layers-eager": dict(
            train=dict(lr=1e-3),
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            why=(
                "2 layers, attention written out (faster than the fused "
                "kernel on a CPU)"
            ),
        ),
        "2-layers-eager-mask-40%": dict(
            train=dict(lr=1e-3),
            mlm=0.4,
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            why="2 layers, attention written out, 40 % masked in training",
        ),
        "2-layers-eager-mask-40%-lr-3e-4": dict(
            train=dict(lr=3e-4),
            mlm=0.4,
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            why="as above at a third of the learning rate",
        ),
        "2-layers-eager-mask-40%-lr-2e-3": dict(
            train=dict(lr=2e-3, warmup_ratio=0.1),
            mlm=0.4,
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            why="as above at twice the learning rate, 10 % warm-up",
        ),
        "1-layer-eager-mask-40%": dict(
            train=dict(lr=1e-3),
            mlm=0.4,
            model=dict(num_hidden_layers=1, attn_implementation="eager"),
            why="one layer, attention written out, 40 % masked in training",
        ),
        "context-32": dict(
            train=dict(lr=1e-3, batch_size=64),
            model=dict(num_hidden_layers=2),
            data=dict(max_length=32),
            why=(
                "2 layers, pairs of 32 tokens (64 a batch: the same tokens "
                "a step)"
            ),
        ),
        "context-32-mask-40%": dict(
            train=dict(lr=1e-3, batch_size=64),
            model=dict(num_hidden_layers=2),
            data=dict(max_length=32),
            mlm=0.4,
            why="2 layers, pairs of 32 tokens, 40 % masked in training",
        ),
        "eager-context-32-mask-40%": dict(
            train=dict(lr=1e-3, batch_size=64),
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            data=dict(max_length=32),
            mlm=0.4,
            why=(
                "2 layers, pairs of 32 tokens, 40 % masked in training, "
                "attention written out"
            ),
        ),
        "eager-context-32-mask-40%-lr-2e-3": dict(
            train=dict(lr=2e-3, batch_size=64, warmup_ratio=0.1),
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            data=dict(max_length=32),
            mlm=0.4,
            why="the same at twice the learning rate, 10 % warm-up",
        ),
        "eager-context-64-mask-40%": dict(
            train=dict(lr=1e-3, batch_size=32),
            model=dict(num_hidden_layers=2, attn_implementation="eager"),
            data=dict(max_length=64),
            mlm=0.4,
            why="2 layers, attention written out, pairs of 64 tokens",
        ),
    },
}
# What every recipe starts from: the pocket presets as they were when the study
# began (the presets have since become the study's winners). A fixed base keeps
# a recorded recipe's meaning: re-run, it trains what it trained then.
STUDY_BASE = {
    "gpt2": RunPreset(
        "pocket",
        "pocket",
        dict(
            lr=1e-3,
            batch_size=4,
            warmup_steps=50,
            weight_decay=0.1,
            adam_betas=(0.9, 0.95),
            precision="auto",
        ),
        dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    ),
    "bert": RunPreset(
        "pocket",
        "pocket",
        dict(
            lr=5e-4,
            batch_size=16,
            warmup_ratio=0.05,
            weight_decay=0.01,
            precision="auto",
        ),
        dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    ),
}
# evaluations per recipe, evenly spaced
EVALS = 6
# held-out batches per evaluation (the same ones every time)
EVAL_BATCHES = 12


def cpu_clock():
    """A stand-in for the `time` module whose perf_counter is this process's CPU
    time."""
    clock = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    )
    clock.perf_counter = time.process_time
    return clock


def make_model(family: str, data, model_overrides: dict):
    """A fresh pocket model of `family` (seed 0) with the study base's and the
    recipe's config changes."""
    fam = FAMILIES[family]
    kw = {**STUDY_BASE[family].model_overrides, **model_overrides}
    torch.manual_seed(0)
    config = fam.config.pocket(
        vocab_size=data.tokenizer.get_vocab_size(),
        **fam.config_ids(data.tokenizer),
        **kw,
    )
    return fam.model(config)


def run(family: str, data, valid, recipe: dict, steps: int, eval_every: int):
    "Train one recipe for `steps` steps; the TrainResult."
    fam = FAMILIES[family]
    cfg = recipe_config(
        STUDY_BASE[family],
        None,
        dict(
            max_steps=steps,
            eval_every=eval_every,
            eval_batches=EVAL_BATCHES,
            progress=False,
            checkpoint_minutes=0,
            **recipe.get("train", {}),
        ),
    )
    model = make_model(family, data, recipe.get("model", {}))
    collate = getattr(data, fam.collate)
    # evaluation keeps the data's own collator (BERT: chapter 2's 15 %), a copy
    eval_collate = copy.deepcopy(collate) if valid is not None else None
    if "mlm" in recipe:  # a training masking rate of the recipe's
        collate = MLMCollator(
            data.tokenizer, recipe["mlm"], collate.whole_word, collate.seed
        )
    return train(
        model,
        data.train,
        cfg,
        collate_fn=collate,
        eval_data=valid,
        eval_collate_fn=eval_collate,
        metrics_fn=fam.metrics,
        model_kwargs=dict(fam.model_kwargs) if fam.model_kwargs else None,
        perplexity=fam.perplexity,
    ), cfg


def seconds_per_step(
    family, data, valid, recipe, probe_steps: int = 8
) -> float:
    """CPU seconds per optimizer step, from steps 3.. of a short probe run (no
    evaluation)."""
    result, _ = run(family, data, None, recipe, probe_steps + 2, 0)
    t = {r["step"]: r["seconds"] for r in result.history["train"]}
    return (t[probe_steps + 2] - t[2]) / probe_steps


def scale_for(recipe: dict):
    """The pocket data scale, with the recipe's changes (a vocabulary size)
    under a name of its own."""
    changes = recipe.get("data", {})
    if not changes:
        return get_scale("pocket")
    return replace(
        get_scale("pocket"),
        name="pocket-" + "-".join(f"{k}{v}" for k, v in changes.items()),
        **changes,
    )


def chars_per_token(data, family: str) -> float:
    """Characters of the held-out text per token of its tokenization
    (<|endoftext|> counts as one)."""
    tok, n_chars, n_tokens = data.tokenizer, 0, 0
    eos = tok.token_to_id(GPT2_EOS) if family == "gpt2" else None
    for ids in data.validation["input_ids"]:
        pieces = [i for i in ids if i != eos]
        n_chars += len(tok.decode(pieces)) + (len(ids) - len(pieces))
        n_tokens += len(ids)
    return n_chars / n_tokens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family", choices=sorted(RECIPES))
    ap.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="CPU minutes of training per recipe",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--out", type=Path, default=Path("book/recorded/recipe-study")
    )
    ap.add_argument(
        "--only", nargs="*", help="recipe names to run (default: all)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the loop's clock: state.seconds and the history count CPU seconds
    training.time = cpu_clock()
    prepare = FAMILIES[args.family].prepare
    datas = {}

    def data_for(recipe):
        scale = scale_for(recipe)
        if scale.name not in datas:
            datas[scale.name] = prepare(scale)
        return datas[scale.name]

    data = data_for({})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.family}.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    command = "python benchmarks/recipe_study.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    meta = report.get("meta", {})
    commands = meta.get("commands") or (
        [meta["command"]] if "command" in meta else []
    )
    report["meta"] = dict(
        commands=[*commands, command],
        budget_cpu_minutes=args.budget,
        threads=args.threads,
        torch=torch.__version__,
        cpu=cpu_model(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        precision=training.resolve_precision("auto", "cpu"),
        eval_batches=EVAL_BATCHES,
        # notes added by hand about earlier commands are kept
        **({"notes": meta["notes"]} if meta.get("notes") else {}),
    )
    report.setdefault("recipes", {})
    names = args.only or list(RECIPES[args.family])
    # a property of the default data, for recipes recorded before it was kept
    if args.family == "gpt2":
        for r in report["recipes"].values():
            if not r.get("data"):
                r.setdefault(
                    "chars_per_token", chars_per_token(data, args.family)
                )
    for name in names:
        recipe = RECIPES[args.family][name]
        data = data_for(recipe)
        per_step = seconds_per_step(args.family, data, None, recipe)
        # a first guess; evaluations are a few % of the budget
        eval_cost = 0.02 * args.budget * 60
        steps = max(10, int((args.budget * 60 - eval_cost) / per_step))
        every = max(1, steps // EVALS)
        wall = time.perf_counter()
        result, cfg = run(
            args.family, data, data.validation, recipe, steps, every
        )
        model = result.model
        report["recipes"][name] = dict(
            why=recipe["why"],
            train=recipe.get("train", {}),
            model=recipe.get("model", {}),
            data=recipe.get("data", {}),
            mlm=recipe.get("mlm"),
            data_digest=data.digest,
            chars_per_token=chars_per_token(data, args.family)
            if args.family == "gpt2"
            else None,
            parameters=count_parameters(model.config),
            steps=steps,
            probe_seconds_per_step=per_step,
            tokens_per_step=cfg.batch_size
            * cfg.grad_accum_steps
            * (
                data.scale.block_size
                if args.family == "gpt2"
                else data.scale.max_length
            ),
            cpu_seconds=result.state.seconds,
            wall_seconds=time.perf_counter() - wall,
            eval=result.history["eval"],
            final=result.history["eval"][-1],
            train_loss=[r["loss"] for r in result.history["train"]],
            train_seconds=[
                round(r["seconds"], 3) for r in result.history["train"]
            ],
        )
        atomic_write_text(json.dumps(report, indent=1) + "\n", path)
        final = result.history["eval"][-1]
        shown = {k: round(v, 4) for k, v in final.items() if k != "step"}
        print(
            f"{name:24} {steps:5d} steps  "
            f"{result.state.seconds / 60:5.2f} CPU min  {shown}",
            flush=True,
        )
        del result, model
    return 0


if __name__ == "__main__":
    sys.exit(main())
