"""Run a long training command and keep what it wrote, for the book to show and
a test to replay.

    python benchmarks/record_run.py gpt2-pocket-1h --threads 1 -- \\
        train-gpt2 --preset pocket --steps 12000 --eval-every 1000

runs `scratchformers <command> --output-dir runs/<name> --no-progress` with
OMP_NUM_THREADS set to --threads, then copies into `book/recorded/<name>/` what
the run wrote (not the weights): `history.json` (every step's training loss,
every evaluation), `run_config.json` (the resolved settings, data digest
included), and for a GPT-2 run `samples.txt` (continuations of a few prompts at
a few temperatures, made by `scratchformers generate`). `run.json`
(machine-readable) and `RUN.md` (for people) give the exact commands, the torch
version, the CPU and the wall time. `tests/test_recorded.py` re-runs the first
20 steps of the command and requires the recorded training losses bit for bit.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from scratchformers.training import cpu_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["This movie", "I have never seen a film so", "The acting was"]
TEMPERATURES = [0.7, 1.0]


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    "Run `scratchformers ARGS` with this interpreter, output shown and kept."
    code = (
        "import sys; from scratchformers.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        text=True,
        capture_output=True,
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode:
        sys.exit(
            f"scratchformers {shlex.join(args)} failed with exit code "
            f"{proc.returncode}"
        )
    return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--sample-tokens", type=int, default=60, help="tokens per GPT-2 sample"
    )
    argv = sys.argv[1:]
    if "--" not in argv:
        ap.error("give the scratchformers command after --")
    args, command = (
        ap.parse_args(argv[: argv.index("--")]),
        argv[argv.index("--") + 1 :],
    )
    out, runs = (
        ROOT / "book" / "recorded" / args.name,
        ROOT / "runs" / args.name,
    )
    if runs.exists():
        sys.exit(
            f"{runs} exists: remove it first (a recorded run starts fresh)"
        )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    train_args = [
        *command,
        "--output-dir",
        str(runs.relative_to(ROOT)),
        "--no-progress",
    ]
    started = time.time()
    proc = cli(train_args, env)
    wall = time.time() - started
    out.mkdir(parents=True, exist_ok=True)
    for name in ("history.json", "run_config.json"):
        shutil.copy(runs / name, out / name)
    (out / "train.log").write_text(proc.stdout)
    sample_commands = []
    if command[0] == "train-gpt2":
        lines = []
        for t in TEMPERATURES:
            for prompt in PROMPTS:
                gen = [
                    "generate",
                    "--model-dir",
                    str(runs.relative_to(ROOT)),
                    "--prompt",
                    prompt,
                    "--temperature",
                    str(t),
                    "--max-new-tokens",
                    str(args.sample_tokens),
                    "--num-samples",
                    "2",
                    "--seed",
                    "0",
                ]
                sample_commands.append(gen)
                text = cli(gen, env).stdout.strip()
                lines.append(
                    f"## temperature {t}, prompt {prompt!r}\n\n{text}\n"
                )
        (out / "samples.txt").write_text("\n".join(lines))
    run = dict(
        name=args.name,
        command=["scratchformers", *train_args],
        env={"OMP_NUM_THREADS": str(args.threads)},
        sample_commands=[["scratchformers", *c] for c in sample_commands],
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=cpu_model(),
        wall_seconds=round(wall, 1),
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
    )
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    history = json.loads((out / "history.json").read_text())
    final = history["eval"][-1] if history["eval"] else {}
    (out / "RUN.md").write_text(
        f"# Recorded run `{args.name}`\n\nRecorded with `python "
        f"benchmarks/record_run.py {shlex.join(sys.argv[1:])}`, which "
        f"ran:\n\n```bash\nOMP_NUM_THREADS={args.threads} "
        f"{shlex.join(run['command'])}\n```\n\n"
        + (
            (
                "and made `samples.txt` with\n\n```bash\n"
                + "\n".join(shlex.join(c) for c in run["sample_commands"])
                + "\n```\n\n"
            )
            if sample_commands
            else ""
        )
        + f"- started: {run['started']}\n- wall time: {wall / 60:.1f} minutes\n"
        f"- torch {torch.__version__}, Python {run['python']}\n- CPU: "
        f"{run['cpu']}, "
        f"{args.threads} thread(s)\n- steps: {len(history['train'])}\n"
        f"- last evaluation: {json.dumps(final)}\n\n"
        "The files here are what the run wrote (the weights are not kept). "
        "`tests/test_recorded.py` "
        "re-runs the first 20 steps of the command and requires the same "
        "training losses bit for bit.\n"
    )
    print(
        f"recorded {args.name} in {out.relative_to(ROOT)} "
        f"({wall / 60:.1f} minutes)"
    )


if __name__ == "__main__":
    main()
