"""symnn: derive a network's gradients symbolically and emit standalone kernels.

Public surface: :class:`Network`, :class:`Dense`, :class:`Activation`, :class:`Loss`,
:func:`derive`, :func:`compile`, :func:`emit`, :func:`gradcheck`; optimisers (:func:`Adam`...).
"""

from __future__ import annotations

from . import errors
from .declare import Activate, Activation, Dense, Loss, Network, activation
from .derivation import Derivation, derive
from .driver import compile, compile_many, emit, emit_source
from .errors import *  # noqa: F403 - the exception hierarchy is public
from .expressions import NonSmoothWarning
from .flat import FlatParams
from .gradcheck import GradcheckReport, gradcheck, sample_point
from .layers import Concat, Dropout, Input, LastStep, Layer, LayerNorm, Tensor, concat, register_layer
from .batchnorm import BatchNorm1d, BatchNorm2d
from .embedding import Embedding
from .recurrent import GRU, LSTM, RNN
from .spatial_layers import AvgPool1d, AvgPool2d, Conv1d, Conv2d, Flatten, GlobalAvgPool, MaxPool1d, MaxPool2d
from .interop import from_onnx, from_torch, from_torch_state_dict, load_torch, to_state_dict
from .persist import Model, Standardizer, export_c_params, load, save
from .train import History, TrainResult, train
from .optim import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, Optimizer, RMSprop, optimizer
from .registry import register_activation, register_loss
from . import spec_toml
from .spec_toml import dumps_spec, load_spec, loads_spec
from .distributed.sweep import sweep
from .distributed.sweep_result import SweepResult

__version__ = "0.1.0"

__all__ = [
    "Activate",
    "Dropout",
    "FlatParams",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "optimizer",
    "History",
    "from_onnx",
    "from_torch",
    "from_torch_state_dict",
    "load_torch",
    "to_state_dict",
    "Model",
    "Standardizer",
    "export_c_params",
    "load",
    "save",
    "TrainResult",
    "train",
    "SweepResult",
    "sweep",
    "Activation",
    "Concat",
    "Dense",
    "Input",
    "LastStep",
    "Layer",
    "LayerNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "Embedding",
    "RNN",
    "GRU",
    "LSTM",
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "Flatten",
    "GlobalAvgPool",
    "MaxPool1d",
    "MaxPool2d",
    "Tensor",
    "register_layer",
    "Derivation",
    "GradcheckReport",
    "Loss",
    "Network",
    "NonSmoothWarning",
    "activation",
    "compile",
    "compile_many",
    "concat",
    "derive",
    "emit",
    "emit_source",
    "errors",
    "gradcheck",
    "sample_point",
    "register_activation",
    "register_loss",
    "spec_toml",
    "dumps_spec",
    "load_spec",
    "loads_spec",
]
