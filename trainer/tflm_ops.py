"""Keep the exported encoder runnable on microcontrollers (TensorFlow Lite Micro).

A Raspberry Pi runs the full TFLite runtime, which has a kernel for nearly every op;
TensorFlow Lite Micro (TFLM) has far fewer, and a model with one op outside them
cannot be deployed there at all. The exporter calls :func:`check_micro_ops` so that
a change to the model that brings in such an op fails loudly at export time.

The op lists follow tflite-micro's kernel registrations
(``tensorflow/lite/micro/kernels/micro_ops.h``, ``micro_mutable_op_resolver.h``).
They are deliberately conservative: an op is listed only where TFLM's reference
kernel takes int8 tensors (or, for :data:`MICRO_FLOAT32_OPS`, float32 ones).
The ops the shipped encoder uses were checked kernel by kernel in the TFLM sources
(``elementwise.cc``: RSQRT int8, SQUARE float32 only; ``reduce_common.cc``: MEAN and
SUM int8; ``maximum_minimum.cc``: MINIMUM int8). A false alarm here costs a look at
the TFLM sources and one line; a missed op costs a firmware port.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Builtin ops whose TFLM reference kernels run on int8 tensors.
MICRO_INT8_OPS: frozenset[str] = frozenset(
    {
        "ABS",
        "ADD",
        "ARG_MAX",
        "ARG_MIN",
        "AVERAGE_POOL_2D",
        "BATCH_MATMUL",
        "BATCH_TO_SPACE_ND",
        "CONCATENATION",
        "CONV_2D",
        "DEPTH_TO_SPACE",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "ELU",
        "EQUAL",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "GATHER",
        "GREATER",
        "GREATER_EQUAL",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LEAKY_RELU",
        "LESS",
        "LESS_EQUAL",
        "LOG_SOFTMAX",
        "LOGISTIC",
        "MAX_POOL_2D",
        "MAXIMUM",
        "MEAN",
        "MINIMUM",
        "MUL",
        "NOT_EQUAL",
        "PACK",
        "PAD",
        "PADV2",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "RELU",
        "RELU6",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SHAPE",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_BATCH_ND",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SPLIT_V",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SVDF",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNPACK",
    }
)
# Ops TFLM has only float32 kernels for (elementwise.cc): allowed where every operand is float32,
# e.g. the SQUARE inside a DEQUANTIZE -> SQUARE -> QUANTIZE island of the L2 normalisation.
MICRO_FLOAT32_OPS: frozenset[str] = frozenset({"COS", "LOG", "SIN", "SQRT", "SQUARE"})


def model_ops(tflite_path: str | Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every operator of the model, in order, as ``(op name, operand dtype names)``."""
    import importlib

    from device.interpreter import interpreter_class

    interpreter_cls, _ = interpreter_class()
    resolver = getattr(importlib.import_module(interpreter_cls.__module__), "OpResolverType", None)
    try:  # the model's own ops, without the XNNPACK delegate's DELEGATE nodes
        interpreter = interpreter_cls(
            model_path=str(tflite_path), experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    except (AttributeError, TypeError):  # an older runtime without that option
        interpreter = interpreter_cls(model_path=str(tflite_path))
    return [
        (op["op_name"], tuple(np.dtype(t).name for t in op["operand_types"]))
        for op in interpreter._get_ops_details()
        if op["op_name"] != "DELEGATE"
    ]


def _supported(name: str, operand_types: tuple[str, ...]) -> bool:
    if name in MICRO_INT8_OPS:
        return True
    return name in MICRO_FLOAT32_OPS and all(t == "float32" for t in operand_types)


def check_micro_ops(tflite_path: str | Path) -> list[str]:
    """The sorted op names the model uses; ValueError naming any op TFLM's int8 kernels lack."""
    ops = model_ops(tflite_path)
    unsupported = sorted({f"{name} ({'/'.join(types)})" for name, types in ops if not _supported(name, types)})
    if unsupported:
        raise ValueError(
            f"{tflite_path}: ops outside TensorFlow Lite Micro's kernels: {', '.join(unsupported)} "
            "(see trainer/tflm_ops.py; change the model, or extend the lists after checking the TFLM kernel)"
        )
    return sorted({name for name, _ in ops})
