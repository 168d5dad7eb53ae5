"""The ``symnn`` command: ``demo`` and ``regen`` (more subcommands arrive with the CLI issue)."""

from __future__ import annotations

import argparse
import sys

from .errors import SymnnError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="symnn", description="Symbolic NN compiler")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the bundled digits network and print test accuracy")
    demo.add_argument("--epochs", type=int, default=40)
    demo.add_argument("--seed", type=int, default=0)
    regen = sub.add_parser("regen", help="rewrite generated/ from generated/MANIFEST.toml")
    regen.add_argument("--root", default="generated")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            run(epochs=args.epochs, seed=args.seed)
        elif args.command == "regen":
            from .golden import regenerate

            for path in regenerate(args.root):
                print(path)
    except SymnnError as exc:
        print(f"symnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
