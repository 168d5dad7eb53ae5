"""The ``symnn`` command: ``demo``, ``regen`` and ``cache`` (more arrive with the CLI issue)."""

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
    demo.add_argument("--backend", choices=["numpy", "c", "auto"], default="auto",
                      help="kernel backend (default auto: C through cffi, NumPy without a compiler)")
    regen = sub.add_parser("regen", help="rewrite generated/ from generated/MANIFEST.toml")
    regen.add_argument("--root", default="generated")
    cache = sub.add_parser("cache", help="show (or --clear) the compiled-module cache")
    cache.add_argument("--clear", action="store_true", help="delete every cached module")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            run(epochs=args.epochs, seed=args.seed, backend=args.backend)
        elif args.command == "regen":
            from .golden import regenerate

            for path in regenerate(args.root):
                print(path)
        elif args.command == "cache":
            from .build import cache_root, clear_cache, list_cache

            if args.clear:
                print(f"removed {clear_cache()} cached module(s) from {cache_root()}")
            else:
                entries = list_cache()
                print(f"{cache_root()}: {len(entries)} module(s)")
                for name, size in entries:
                    print(f"  {name}  {size / 1024:.0f} KiB")
    except SymnnError as exc:
        print(f"symnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
