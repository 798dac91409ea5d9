"""Pick the TFLite interpreter available on this machine, and say which.

Order: ``ai-edge-litert`` (maintained, numpy 2), ``tflite-runtime`` (classic Pi
package, numpy < 2), then ``tensorflow.lite`` as a workstation fallback. The
fallback is only tried when neither small runtime is installed, so a device
install never loads TensorFlow.

The runtime's C++ logger prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``
straight to file descriptor 2 the first time a model is loaded, so every ``kws`` command
would start with it. No environment variable or Python option of LiteRT silences that
logger (``TF_CPP_MIN_LOG_LEVEL`` is TensorFlow's, not LiteRT's minimal logger), and
turning the delegate off to avoid it would cost speed. So :func:`make_interpreter` holds
fd 2 in a temporary file while the model loads: that one line becomes part of the
``TFLite runtime`` log message (seen with ``-v``), and anything else the runtime wrote
(a real error) is written back to stderr unchanged.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)
# What the runtime prints on stderr when it applies its default CPU delegate (once per process).
DELEGATE_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


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


@contextmanager
def _runtime_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 inside the block; the lines land in the yielded list.

    Python's ``sys.stderr`` is flushed first so nothing of ours is captured by mistake. When
    fd 2 cannot be redirected (closed, no temporary folder) the block runs uncaptured.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        capture = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this try; closed in the last finally
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lines
        return
    try:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            capture.seek(0)
            lines += capture.read().decode("utf-8", "replace").splitlines()
    finally:
        os.close(saved)
        capture.close()


def make_interpreter(model_path: str, num_threads: int = 1) -> tuple[Any, str]:
    """Load ``model_path`` into a ready interpreter; return it and the runtime's name.

    The delegate line the runtime prints is folded into a log message (see the module
    docstring); any other output of the runtime reaches stderr, also when loading fails.
    """
    cls, name = interpreter_class()
    printed: list[str] = []
    try:
        with _runtime_stderr() as printed:
            interpreter = cls(model_path=model_path, num_threads=num_threads)
            interpreter.allocate_tensors()  # the default delegate is applied here (lazily), not in the constructor
    finally:
        other = [line for line in printed if line.strip() != DELEGATE_LINE]
        if other:
            print("\n".join(other), file=sys.stderr, flush=True)
    delegate = ", XNNPACK delegate" if len(other) < len(printed) else ""
    log.info("TFLite runtime: %s (%d thread%s%s)", name, num_threads, "" if num_threads == 1 else "s", delegate)
    return interpreter, name
