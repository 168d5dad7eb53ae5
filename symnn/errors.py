"""symnn's exception hierarchy.

Every error symnn raises on bad input derives from :class:`SymnnError` *and* from the builtin
that a generic handler would expect (``ValueError`` for bad values, ``TypeError`` for bad
types), so ``except ValueError`` keeps working for callers that do not know symnn.
The tree follows ``docs/design/RELIABILITY.md`` (b).
"""

from __future__ import annotations


class SymnnError(Exception):
    """Root of every exception symnn raises on purpose."""


# -- specification (declaration-time) errors -----------------------------------------------
class SpecError(SymnnError, ValueError):
    """The network description is invalid; raised before any symbolic work."""


class LayerSizeMismatchError(SpecError):
    """Layer i's output width differs from layer i+1's input width."""


class UnknownActivationError(SpecError):
    """An activation or loss name is not in the registry."""


class InvalidExpressionError(SpecError):
    """A user SymPy expression has the wrong symbols, type or domain."""


class NonDifferentiableError(SpecError):
    """SymPy could not produce a usable derivative (undefined function, NaN at a point...)."""


class ConfigError(SpecError):
    """A hyper-parameter or option has an invalid value."""


class SpecParseError(SpecError):
    """A spec file (TOML) or an expression string in it is malformed; names line or key."""


class SpecTypeError(SymnnError, TypeError):
    """A declaration argument has the wrong Python type (e.g. a bool or str width)."""


# -- data errors ------------------------------------------------------------------------------
class DataError(SymnnError, ValueError):
    """Arrays passed to a kernel are unusable."""


class ShapeError(DataError):
    """An array has the wrong number of dimensions or the wrong size."""


class NonFiniteInputError(DataError):
    """An input array holds NaN or infinity."""


class PaddingOnlyError(DataError):
    """A batch of padded sequences whose every step a loss leaves out (masks of 0, labels
    -100): its mean loss over the steps it keeps is 0/0. ``sn.train`` skips such a batch."""


class LabelRangeError(DataError):
    """A class label is out of range, negative or not an integer."""


class IndexRangeError(DataError):
    """An entry of an index input (what an ``sn.Embedding`` reads) is negative, past the
    vocabulary or not an integer; the C API's ``SYMNN_ERR_INDEX``."""


class EmptyBatchError(DataError):
    """A batch has no rows where a mean over rows is needed."""


class DTypeError(SymnnError, TypeError):
    """An array has a dtype symnn will not convert (object, str, complex, bool)."""


# -- numerics, code generation, build ---------------------------------------------------------
class NumericalError(SymnnError, ArithmeticError):
    """A computation produced a non-finite value where a finite one was required."""


class NonFiniteError(NumericalError):
    """A loss or gradient became NaN or infinite."""


class CodegenError(SymnnError, ValueError):
    """An expression cannot be printed for the chosen backend."""


class UnsupportedFunctionError(CodegenError):
    """A SymPy function has no implementation in the target backend."""


class BuildError(SymnnError, RuntimeError):
    """Building or loading emitted code failed."""


class CompilerNotFoundError(BuildError):
    """No usable C compiler; the message says how to install one or to use NumPy."""


class CompileError(BuildError):
    """The C compiler rejected emitted code; the message has the command and its output."""


class CacheError(BuildError):
    """The compiled-module cache directory cannot be used (names the path and SYMNN_CACHE_DIR)."""


class KernelStatusError(SymnnError, RuntimeError):
    """An emitted C kernel returned an error status the Python checks should have prevented."""


class GradientCheckError(NumericalError):
    """``gradcheck(..., raise_on_fail=True)`` found a gradient that disagrees."""


class ModelFormatError(DataError):
    """A file from elsewhere (a saved model, an imported PyTorch or ONNX model) is malformed,
    from an unknown format version, or holds something symnn refuses to evaluate; the message
    names the place inside the file."""


class UntrustedInputError(SpecError):
    """A string or number from a file would reach emitted code, a path, a LaTeX document or a
    process in a form symnn does not accept (a name that is not a plain identifier, a LaTeX
    command outside the math whitelist, an expression over the size budget)."""


class WorkerLostError(SymnnError, RuntimeError):
    """Data-parallel training could not finish a step: its workers kept dying on every retry,
    or the Dask cluster has no worker left. The parameters are those before the step (resume
    from the last checkpoint, ``checkpoint=``)."""
