"""`rnntune` command line: one subcommand per capability, each a typed function."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightning_modules.config import SpecError


def cmd_train(spec_path: str, output_dir: str | None, max_epochs: int | None, quiet: bool) -> int:
    """Train one model from a spec (no search); print and save its metrics."""
    from lightning_modules.config import load_train_spec

    spec = load_train_spec(spec_path)  # validate before the slow imports (torch, Lightning)
    from lightning_modules.training import train

    if max_epochs is not None:
        spec = spec.with_params({"max_epochs": max_epochs})
    out = Path(output_dir or f"runs/{Path(spec_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    m = spec.model
    print(
        f"training {m.cell_type} x{m.num_layers} h={m.hidden_size}"
        f"{' bidirectional' if m.bidirectional else ''} on {spec.data.name} -> {out}"
    )
    result = train(spec, out, enable_progress_bar=not quiet)
    print(
        f"\nstatus       {result.status} after {result.epochs} epochs, {result.train_time_s:.1f} s"
    )
    if result.best_val is not None:
        print(f"best {result.monitor:<7} {result.best_val:.4f}")
    for name, value in sorted(result.test.items()):
        print(f"{name:<12} {value:.4f}")
    print(f"checkpoint   {result.checkpoint}")
    print(f"results      {out / 'result.json'}")
    return 1 if result.status == "diverged" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnntune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model from a spec, no search")
    p.add_argument("spec", help="YAML spec (see examples/)")
    p.add_argument("--output-dir", default=None, help="where checkpoints and results go")
    p.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args.spec, args.output_dir, args.max_epochs, args.quiet)
    except SpecError as e:
        print(f"rnntune: invalid spec {args.spec}:\n{e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"rnntune: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
