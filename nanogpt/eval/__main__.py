"""Eval companion CLI: `python -m nanogpt.eval {evaluate,sample,export} RUN_OR_CHECKPOINT ...`.

    python -m nanogpt.eval evaluate out/tiny-2by4-stdlib_char            # val loss, perplexity, 2:4 check
    python -m nanogpt.eval sample out/tiny-2by4-stdlib_char --prompt "def " --max-new-tokens 300
    python -m nanogpt.eval export out/tiny-2by4-stdlib_char --kind dense --out out/tiny-dense
"""

from __future__ import annotations

import argparse
import json
import sys

from nanogpt.eval.evaluate import evaluate_checkpoint
from nanogpt.eval.export import EXPORT_KINDS, export
from nanogpt.eval.sample import sample
from sparse_core.train import CheckpointError


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nanogpt.eval", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="loss and perplexity, with a 2:4 mask check")
    ev.add_argument("path", help="run folder, ckpt folder or ckpt_*.pt file")
    ev.add_argument("--split", default="val", choices=("train", "val"))
    ev.add_argument("--iters", type=int, help="micro-batches (default: the run's train.eval_iters)")
    ev.add_argument("--batch-size", type=int, help="default: the run's data.batch_size")
    ev.add_argument("--data-dir", help="prepared data folder (default: the run's data.dir)")
    ev.add_argument("--device", default="cpu")
    sa = sub.add_parser("sample", help="generate text")
    sa.add_argument("path")
    sa.add_argument("--prompt", default="\n")
    sa.add_argument("--max-new-tokens", type=int, default=200)
    sa.add_argument("--temperature", type=float, default=0.8)
    sa.add_argument("--top-k", type=int, default=40)
    sa.add_argument("--num-samples", type=int, default=1)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--device", default="cpu")
    sa.add_argument("--semi-structured", action="store_true", help="2:4 FFNs as sparse tensors (CUDA sm80+)")
    ex = sub.add_parser("export", help="dense or 2:4-compressed checkpoint for inference")
    ex.add_argument("path")
    ex.add_argument("--kind", default="dense", choices=EXPORT_KINDS)
    ex.add_argument("--out", required=True, help="output folder")
    a = p.parse_args(argv)
    if a.command == "evaluate":
        print(json.dumps(evaluate_checkpoint(a.path, a.split, a.iters, a.batch_size, a.data_dir, a.device), indent=1))
    elif a.command == "sample":
        for text in sample(a.path, a.prompt, a.max_new_tokens, a.temperature, a.top_k, a.num_samples, a.seed,
                           a.device, a.semi_structured):
            print(text, "\n" + "-" * 40)
    else:
        print(export(a.path, a.out, a.kind))


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
