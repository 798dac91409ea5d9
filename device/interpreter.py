"""Pick the TFLite interpreter available on this machine, and say which.

Order: ``ai-edge-litert`` (maintained, numpy 2), ``tflite-runtime`` (classic Pi
package, numpy < 2), then ``tensorflow.lite`` as a workstation fallback. The
fallback is only tried when neither small runtime is installed, so a device
install never loads TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)

_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)


class NoInterpreterError(ImportError):
    """No TFLite interpreter package is installed."""


def interpreter_class() -> tuple[type, str]:
    """Return ``(Interpreter class, package name)`` of the first runtime that imports."""
    reasons = []
    for name, module_name in _CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            reasons.append(f"{name}: {error}")
            continue
        return module.Interpreter, name
    raise NoInterpreterError(
        "no TFLite interpreter found; install one with `pip install ai-edge-litert` "
        "(or `tflite-runtime` with numpy<2 on older Pi images). Tried: " + "; ".join(reasons)
    )


def make_interpreter(model_path: str, num_threads: int = 1) -> tuple[Any, str]:
    """Load ``model_path`` into a ready interpreter; return it and the runtime's name."""
    cls, name = interpreter_class()
    interpreter = cls(model_path=model_path, num_threads=num_threads)
    interpreter.allocate_tensors()
    log.info("TFLite runtime: %s (%d thread%s)", name, num_threads, "" if num_threads == 1 else "s")
    return interpreter, name
