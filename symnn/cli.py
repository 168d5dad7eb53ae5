"""The ``symnn`` command.

``latex SPEC``, ``emit SPEC``, ``check SPEC``, ``train SPEC --data CSV`` and ``sweep SPEC`` work on TOML spec
files (:mod:`symnn.spec_toml`, examples in ``examples/``); ``demo``, ``regen`` and ``cache``
need none. A user mistake prints one line ``symnn: error: ...`` and exits with status 2;
a failed gradient check exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .backends import registry as backends
from .errors import ConfigError, SymnnError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symnn", description="Symbolic derivation and code generation "
                                     "for neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    latex = sub.add_parser("latex", help="print the derivation of a spec: readable text in a terminal, "
                                         "LaTeX when piped or with --latex")
    latex.add_argument("spec", help="TOML network spec")
    form = latex.add_mutually_exclusive_group()
    form.add_argument("--latex", action="store_true", help="LaTeX, also in a terminal")
    form.add_argument("--text", action="store_true", help="plain text, also when piped")
    latex.add_argument("--fragment", action="store_true", help="LaTeX: only the body, no document")

    emit = sub.add_parser("emit", help="write the standalone kernels of a spec")
    emit.add_argument("spec", help="TOML network spec")
    emit.add_argument("--backend", choices=backends.names(), default="numpy")
    emit.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    emit.add_argument("--out", required=True, help="output directory")
    emit.add_argument("--with-train-step", action="store_true",
                      help="also emit train_step with the spec's [train] optimizer (default adam)")

    check = sub.add_parser("check", help="gradient check of a spec on both backends and dtypes")
    check.add_argument("spec", help="TOML network spec")
    check.add_argument("--backend", choices=[*backends.names(), "both"], default="both",
                       help="one backend, or both (every backend)")
    check.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train a spec on a CSV file")
    train.add_argument("spec", help="TOML network spec (its [train] table gives the settings)")
    train.add_argument("--data", required=True, help="CSV, or Parquet files (a path or a quoted glob ending in "
                       ".parquet: one part per file, read by the workers): inputs, then targets (or one integer label); "
                       "an image input [C, H, W] is C*H*W columns, row-major (x.reshape(N, -1) of NCHW); "
                       "a first line that is not numbers is taken for column names")
    train.add_argument("--header", action="store_true",
                       help="skip the first line of the CSV whatever it holds (default: only if not numbers)")
    train.add_argument("--out", help="save the trained model (.npz) here")
    train.add_argument("--backend", choices=[*backends.names(), "auto"], help="overrides [train] backend")
    train.add_argument("--epochs", type=int, help="overrides [train] epochs")
    train.add_argument("--progress", action="store_true", help="show a progress bar (needs tqdm)")
    train.add_argument("--scheduler", help="train data-parallel on Dask: local:N (N worker processes here) or a "
                       "scheduler address such as tcp://10.0.0.1:8786 (needs symnn[distributed])")
    train.add_argument("--parts", type=int, help="gradient blocks per step for CSV data (default with --scheduler: "
                       "one per worker); Parquet data are parted by file")
    train.add_argument("--checkpoint", help="keep the run's state in this file; an existing one is resumed")
    train.add_argument("--checkpoint-every", type=int, default=1, metavar="K",
                       help="write the checkpoint every K epochs (default 1)")

    sweep = sub.add_parser("sweep", help="train a spec once per point of a hyperparameter grid; print "
                           "the table of results")
    sweep.add_argument("spec", help="TOML network spec (its [train] table gives the settings not swept)")
    sweep.add_argument("--data", required=True, help="CSV, as symnn train reads it")
    sweep.add_argument("--header", action="store_true", help="skip the first line of the CSV whatever it holds")
    sweep.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                       help="a swept key and its values (repeat for more keys; the first is slowest): "
                       "optimizer, its hyperparameters (lr, momentum, ...), l1, l2, epochs, batch_size, seed")
    sweep.add_argument("--scheduler", help="run the points on Dask: local:N (N worker processes here) or a "
                       "scheduler address (needs symnn[distributed]); default: in turn, in this process")
    sweep.add_argument("--epochs", type=int, help="overrides [train] epochs")
    sweep.add_argument("--backend", choices=[*backends.names(), "auto"], help="overrides [train] backend")
    sweep.add_argument("--out", help="write the table here as CSV")
    sweep.add_argument("--plot", help="write a PNG of the metric over the grid here (needs matplotlib)")

    report = sub.add_parser("report", help="an HTML page or PDF of the derivation beside the emitted code")
    report.add_argument("spec", help="TOML network spec")
    report.add_argument("--out", required=True, help="report.html (one self-contained page, MathML; "
                        "needs latex2mathml), report.pdf (built with pdflatex) or report.tex")
    report.add_argument("--train", metavar="CSV", help="train with the spec's settings first and "
                        "include the training curve (the PDF's needs matplotlib)")
    report.add_argument("--dtype", choices=["float64", "float32"], default="float64")

    bench = sub.add_parser("bench", help="time loss-and-gradient of a spec on each backend")
    bench.add_argument("spec", help="TOML network spec")
    bench.add_argument("--batch", type=int, default=64)
    bench.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    bench.add_argument("--backend", choices=[*backends.names(), "both"], default="both")
    bench.add_argument("--blas", action="store_true",
                       help="also time the C built with blas=True (large products through NumPy's OpenBLAS)")
    bench.add_argument("--openmp", type=int, metavar="THREADS", default=0,
                       help="also time the C built with openmp=True, on THREADS OpenMP threads")

    port = sub.add_parser("from-torch", help="ship saved PyTorch weights (a state_dict and a spec) as "
                          "standalone C")
    port.add_argument("model", help="a state_dict file, torch.save(model.state_dict(), path), read with "
                      "torch.load(weights_only=True): it runs no code")
    port.add_argument("--spec", help="TOML spec of the network the weights belong to (needed for a state_dict)")
    port.add_argument("--trust-pickle", action="store_true",
                      help="read MODEL with torch.load(weights_only=False) to accept a whole pickled "
                      "nn.Sequential (torch.save(model, path)): unpickling RUNS ANY CODE IN THE FILE, as "
                      "you; only for a file you made or whose author you trust")
    port.add_argument("--out", required=True, help="output directory")
    port.add_argument("--name", help="C symbol prefix (default: the spec's network name, or torch_mlp)")
    port.add_argument("--loss", help="loss of a whole module (default from the last activation); a "
                      "spec gives its own")
    port.add_argument("--dtype", choices=["float64", "float32"], default="float64")

    onnx = sub.add_parser("from-onnx", help="ship an ONNX MLP or CNN as standalone C")
    onnx.add_argument("model", help="an .onnx file: dense, convolutional, normalising and recurrent layers (docs/layer_graphs.md lists the ops)")
    onnx.add_argument("--out", required=True, help="output directory")
    onnx.add_argument("--name", default="onnx_mlp", help="C symbol prefix")
    onnx.add_argument("--loss", help="loss for the spec (default from the last activation)")
    onnx.add_argument("--dtype", choices=["float64", "float32"], default="float64")

    demo = sub.add_parser("demo", help="train the bundled digits network and print test accuracy")
    demo.add_argument("--epochs", type=int, default=None,
                      help="training epochs (default 40; 20 with --cnn)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--cnn", action="store_true",
                      help="a convolutional network on the digits as 1x8x8 images instead of the dense one")
    demo.add_argument("--backend", choices=[*backends.names(), "auto"], default="auto",
                      help="kernel backend (default auto: C through cffi, NumPy without a compiler)")
    regen = sub.add_parser("regen", help="rewrite generated/ from generated/MANIFEST.toml")
    regen.add_argument("--root", default="generated")
    cache = sub.add_parser("cache", help="show (or --clear) the compiled-module cache")
    cache.add_argument("--clear", action="store_true",
                       help="delete every cached module and the temporary build dirs of killed builds")
    return parser


#: exit status of a command whose reader went away (``symnn latex spec | head``): what a C tool
#: killed by SIGPIPE reports to the shell (128 + 13)
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader closed the pipe: nothing is wrong and nothing more can be said. stdout is
        # pointed at /dev/null so that the interpreter's final flush does not raise again
        # (Python's documented recipe, "Note on SIGPIPE" in the signal module)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except SymnnError as exc:
        print(f"symnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable data file, an unwritable output directory
        print(f"symnn: error: {exc}", file=sys.stderr)
        return 2


def _latex(args: argparse.Namespace) -> int:
    from .derivation import derive
    from .spec_toml import load_spec

    d = derive(load_spec(args.spec).network)
    # one record, two printers: text for a person at a terminal, LaTeX for a file or a pipe
    as_text = args.text or (not args.latex and not args.fragment and sys.stdout.isatty())
    print(d.text() if as_text else d.latex(document=not args.fragment))
    return 0


def _emit(args: argparse.Namespace) -> int:
    from .driver import emit
    from .optim import optimizer
    from .spec_toml import load_spec

    spec = load_spec(args.spec)
    opt = None
    if args.with_train_step:
        opt = optimizer(**_optimizer_table(spec.train))
    for path in emit(spec.network, args.out, backend=args.backend, dtype=args.dtype, optimizer=opt):
        print(path)
    return 0


def _optimizer_table(train: dict) -> dict:
    table = train.get("optimizer", "adam")
    return {"name": table} if isinstance(table, str) else dict(table)


def _check(args: argparse.Namespace) -> int:
    import warnings

    from .driver import compile as compile_kernel
    from .gradcheck import gradcheck, sample_point
    from .spec_toml import load_spec

    net = load_spec(args.spec).network
    params, X, Y = sample_point(net, seed=args.seed)
    chosen = list(backends.names()) if args.backend == "both" else [args.backend]
    failed = False
    for backend in chosen:
        for dtype in ("float64", "float32"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                k = compile_kernel(net, backend=backend, dtype=dtype)
            # entry by entry up to 20,000 parameters: a random projection moves every weight at
            # once and so can cross a ReLU or |w| kink that single-entry steps stay clear of
            report = gradcheck(k, {n: v.astype(dtype) for n, v in params.items()}, X, Y, max_entries=20_000)
            # the report's own verdict, so this line and str(report) never disagree: it names
            # the criterion that decided (per entry, or the norm criterion) with its thresholds
            word = _CHECK_WORDS[report.status]
            print(f"{backend:5s} {dtype}: {report.method}: {word}: {report.verdict()}")
            failed |= not report.ok
    return 1 if failed else 0


#: how `symnn check` words a report's status
_CHECK_WORDS = {"PASS": "ok", "FAIL": "FAILED", "NOT CHECKED": "NOT CHECKED"}


def _header_lines(data_path: str, header: bool) -> int:
    """How many lines to skip before the numbers: through the first line with content (not blank,
    not only a # comment) if ``header`` is set or none of that line's fields is a number (column
    names), else none. A first line mixing names and numbers is not taken for a header: it fails
    in numpy.loadtxt, like any later non-numeric field, rather than a data row being dropped."""
    with open(data_path, encoding="utf-8-sig", errors="replace") as fh:
        for index, line in enumerate(fh):
            fields = line.split("#", 1)[0].strip()
            if not fields:
                continue
            return index + 1 if header or not any(map(_is_number, fields.split(","))) else 0
    return 0


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _csv_columns(net, data, data_path: str, skip: int):
    """``(X, Y)`` from the CSV's columns: the inputs, then the targets (one integer label
    column where the loss takes class labels; one per step for a sequence output, a tagger's).
    With several inputs or outputs the columns are the packed layout the kernels take: the
    inputs side by side in the order of the spec's inputs, then every output's targets side by
    side (class targets as one-hot rows). Sequences of run-time length (``shape = ["T", F]``)
    take their T from the row's width, every row of one length."""
    from . import naming
    from .errors import DataError

    step_labels, labels = net.step_labels, net.takes_labels
    x_form = naming.length_form(net.n_in)
    y_form = naming.length_form(net.output_steps[0]) if step_labels else (0, 1) if labels else \
        naming.length_form(net.n_out)
    per_step, fixed = x_form[0] + y_form[0], x_form[1] + y_form[1]
    # the run-time T the row's width gives (a width of no whole number of steps fails below)
    length = max((data.shape[1] - fixed) // per_step, 1) if per_step else 0
    n_in, n_y = (a * length + b for a, b in (x_form, y_form))
    width = n_in + n_y
    if data.shape[1] != width:
        what = f"{n_y} label{'s' if n_y > 1 else ''}" if labels else f"{n_y} targets"
        if net.several_outputs:
            what += " (" + ", ".join(f"{name}: {w}" for name, w in zip(net.output_names, net.output_widths)) + ")"
        steps = f" for sequences of T = {length} steps" if per_step else ""
        raise DataError(f"{data_path}: expected {width} columns ({n_in} inputs, {what}){steps}, got {data.shape[1]}")
    X = data[:, :n_in]
    k = int(net.output_shapes[0][-1])
    if step_labels:
        Y = _csv_labels(data[:, n_in:].reshape(-1), k, data_path, skip, n_y).reshape(len(data), n_y)
    elif labels:
        Y = _csv_labels(data[:, n_in], k, data_path, skip)
    else:
        Y = data[:, n_in:]
    if net.several_inputs:
        import sympy as sp

        at = {naming.T: length}
        X = {name: X[:, int(sp.sympify(lo).subs(at)):int(sp.sympify(hi).subs(at))]
             for name, (lo, hi) in zip(net.input_names, net.column_blocks(net.input_widths))}
    return X, Y




def _csv_labels(column, n_classes: int, data_path: str, skip: int, per_row: int = 1):
    """The label column as integers, once every entry passes the kernels' own label rule
    (:func:`symnn.kernel.first_bad_label`): a cast alone would truncate 2.9 to 2 and -0.9 to 0
    and train on it. A bad label is named by its line in the file, as the C trainer names it.
    ``per_row``: the labels of each line (a tagger's, one per step), read row after row."""
    import numpy as np

    from .errors import LabelRangeError
    from .kernel import first_bad_label

    from .kernel import IGNORE_LABEL

    # a sequence's labels: -100 marks a padded step (PyTorch's ignore_index), which no loss reads
    kept = np.flatnonzero(column != IGNORE_LABEL) if per_row > 1 else np.arange(len(column))
    entry = first_bad_label(column[kept], n_classes)
    if entry is not None:
        entry = int(kept[entry])
        row, step = divmod(entry, per_row)
        where = f", step {step}" if per_row > 1 else ""
        raise LabelRangeError(f"{data_path}: line {_data_line(data_path, skip, row)}{where}: label {column[entry]} "
                              f"out of range [0, {n_classes}) (a class label is an integer"
                              f"{f'; {IGNORE_LABEL} a padded step' if per_row > 1 else ''})")
    return column.astype(np.int64)


def _data_line(data_path: str, skip: int, row: int) -> int:
    """The line number (from 1) of data row ``row`` (from 0) of the CSV that ``numpy.loadtxt``
    read after ``skip`` lines: it skips lines that are empty or only a # comment, as here."""
    with open(data_path, encoding="utf-8-sig", errors="replace") as fh:
        seen = -1
        for index, line in enumerate(fh):
            if index >= skip and line.split("#", 1)[0].strip():
                seen += 1
                if seen == row:
                    return index + 1
    return skip + row + 1  # not reached for a file loadtxt read; a plain count otherwise


def _read_csv(net, data_path: str, header: bool):
    """``(X, Y)`` for ``net`` from the CSV file at ``data_path`` (see :func:`_csv_columns`)."""
    import numpy as np

    from .errors import DataError

    skip = _header_lines(data_path, header)
    try:
        data = np.loadtxt(data_path, delimiter=",", ndmin=2, skiprows=skip, encoding="utf-8-sig")
    except ValueError as exc:
        raise DataError(f"{data_path} is not a numeric CSV file (only a first line of column names may "
                        f"hold text; --header skips the first line whatever it holds): {exc}") from exc
    return _csv_columns(net, data, data_path, skip)


def _is_parquet(data_path: str) -> bool:
    return data_path.endswith(".parquet")


def _train_from_csv(spec, data_path: str, progress: bool, backend: str | None = None,
                    epochs: int | None = None, header: bool = False, **parallel):
    from .optim import optimizer
    from .train import train

    net, settings = spec.network, dict(spec.train)
    if _is_parquet(data_path):
        from .distributed.parts import read_parquet

        if len(net.input_shapes) != 1:
            raise ConfigError("Parquet data are read by column position into one input; this network has "
                              f"{len(net.input_shapes)} inputs")
        X, Y = read_parquet(data_path, int(net.n_in))
    else:
        X, Y = _read_csv(net, data_path, header)
    kw = {k: settings[k] for k in ("epochs", "batch_size", "seed", "validation_split", "patience",
                                     "standardize", "backend", "dtype") if k in settings}
    if backend:
        kw["backend"] = backend
    if epochs:
        kw["epochs"] = epochs
    kw.setdefault("backend", "auto")
    kw.update({k: v for k, v in parallel.items() if v is not None})
    result = train(net, X, Y, optimizer=optimizer(**_optimizer_table(settings)), progress=progress, **kw)
    result.data = None if _is_parquet(data_path) else (X, Y)
    return result


def _train(args: argparse.Namespace) -> int:
    from .spec_toml import load_spec

    spec = load_spec(args.spec)
    net = spec.network
    result = _train_from_csv(spec, args.data, args.progress, args.backend, args.epochs, args.header,
                             client=args.scheduler, parts=args.parts, checkpoint=args.checkpoint,
                             checkpoint_every=args.checkpoint_every)
    from .decision import is_classifier

    h = result.history
    where = f" on {args.scheduler}" if args.scheduler else ""
    if result.data is None:
        rows = "the Parquet data"
    else:
        X, Y = result.data
        rows = f"{len(next(iter(X.values()))) if isinstance(X, dict) else len(X)} rows"
    print(f"trained {len(h.train_loss)} epochs ({result.steps} steps) on {rows}{where} with "
          f"{result.kernel.optimizer.describe()}, backend {result.kernel.backend}")
    print(f"final train loss {h.train_loss[-1]:.6f}; best epoch {result.best_epoch}")
    if is_classifier(net) and result.data is not None:
        print(f"training accuracy: {result.accuracy(X, Y):.4f}")
    if args.out:
        print(f"saved {result.save(Path(args.out))}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .distributed.sweep import sweep
    from .distributed.sweep_grid import parse_grid
    from .spec_toml import load_spec

    spec = load_spec(args.spec)
    grid = parse_grid(args.grid)
    X, Y = _read_csv(spec.network, args.data, args.header)
    kw = {k: v for k, v in (("epochs", args.epochs), ("backend", args.backend)) if v is not None}
    result = sweep(spec, grid, X, Y, client=args.scheduler, **kw)
    print(result.text())
    if args.out:
        print(f"saved {result.to_csv(args.out)}")
    if args.plot:
        print(f"saved {result.plot(args.plot)}")
    return 0


#: what ``symnn report --out`` writes, by suffix: the HTML page, the PDF, its LaTeX source
_REPORT_SUFFIXES = (".html", ".pdf", ".tex")


def _report(args: argparse.Namespace) -> int:
    import tempfile

    from .report_doc import build_report
    from .spec_toml import load_spec

    out = Path(args.out)
    if out.suffix not in _REPORT_SUFFIXES:  # before the spec is read or anything trained
        raise ConfigError(f"report output must end in {', '.join(_REPORT_SUFFIXES)}, got {out.name!r}")
    spec = load_spec(args.spec)
    result = _train_from_csv(spec, args.train, progress=False) if args.train else None
    note = ""
    if result is not None:
        h = result.history
        note = (f"Trained {len(h.train_loss)} epochs on {args.train} with "
                f"{result.kernel.optimizer.describe()}: final train loss {h.train_loss[-1]:.4g}.")
    if out.suffix == ".html":  # the curve is drawn in the page (SVG): no matplotlib
        from .report_html import build_html_report

        print(build_html_report(spec.network, out, dtype=args.dtype,
                                history=None if result is None else result.history, training_text=note))
        return 0
    with tempfile.TemporaryDirectory(prefix="symnn-curve-") as tmp:
        curve = None if result is None else result.history.plot(Path(tmp) / "curve.png")
        print(build_report(spec.network, out, dtype=args.dtype, curve=curve, training_text=note))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import os

    from .bench import bench
    from .errors import ConfigError
    from .spec_toml import load_spec

    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    if args.openmp < 0:
        raise ConfigError(f"--openmp must be a number of threads >= 1, got {args.openmp}")
    if args.openmp:
        os.environ["OMP_NUM_THREADS"] = str(args.openmp)  # read when libgomp loads, with the module
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # only effective before NumPy's BLAS starts threads
    chosen = tuple(backends.names()) if args.backend == "both" else (args.backend,)
    times = bench(load_spec(args.spec).network, args.batch, args.dtype, backends=chosen,
                  blas=args.blas and "c" in chosen, openmp=bool(args.openmp) and "c" in chosen)
    base = times.get("symnn numpy") or next(iter(times.values()))
    print(f"loss and gradient, batch {args.batch}, {args.dtype}, median of 5 rounds:")
    for name, sec in times.items():
        print(f"  {name:20s} {sec * 1e6:10.1f} us   {sec / base:5.2f} x NumPy")
    return 0


def _ship(net, params, args: argparse.Namespace) -> int:
    """Emit C for an imported network, with its weights as NAME_params.h and its spec; the
    emitted main.c finds NAME_params.h beside it, so ``make`` builds a program of this model."""
    from .driver import emit
    from .emit import write_atomic
    from .persist import export_c_params
    from .spec_toml import dumps_spec

    out = Path(args.out)
    paths = emit(net, out, backend="c", dtype=args.dtype)
    paths.append(export_c_params(out, net, params, dtype=args.dtype))
    write_atomic(out / f"{net.name}.toml", dumps_spec(net))
    paths.append(out / f"{net.name}.toml")
    for path in paths:
        print(path)
    return 0


def _from_torch(args: argparse.Namespace) -> int:
    from .interop import load_torch
    from .spec_toml import load_spec

    net = load_spec(args.spec).network if args.spec else None
    return _ship(*load_torch(args.model, net, trust_pickle=args.trust_pickle, loss=args.loss, name=args.name,
                             dtype=args.dtype), args)


def _from_onnx(args: argparse.Namespace) -> int:
    from .interop import from_onnx

    return _ship(*from_onnx(args.model, loss=args.loss, name=args.name, dtype=args.dtype), args)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run, run_cnn

    if args.cnn:
        run_cnn(**({"epochs": args.epochs} if args.epochs is not None else {}), seed=args.seed, backend=args.backend)
    else:
        run(**({"epochs": args.epochs} if args.epochs is not None else {}), seed=args.seed, backend=args.backend)
    return 0


def _regen(args: argparse.Namespace) -> int:
    from .golden import regenerate

    for path in regenerate(args.root):
        print(path)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from .build import cache_root, clear_cache, list_cache

    if args.clear:
        entries, stale = clear_cache()
        print(f"removed {entries} cached module(s) and {stale} stale temporary build dir(s) "
              f"from {cache_root()}")
        return 0
    entries = list_cache()
    print(f"{cache_root()}: {len(entries)} module(s)")
    for name, size in entries:
        print(f"  {name}  {size / 1024:.0f} KiB")
    return 0


_COMMANDS = {"latex": _latex, "emit": _emit, "check": _check, "train": _train, "sweep": _sweep, "report": _report,
             "bench": _bench, "from-torch": _from_torch, "from-onnx": _from_onnx,
             "demo": _demo,
             "regen": _regen, "cache": _cache}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
