"""The ``kws-train`` and ``kws-eval`` console scripts: one clear line when the trainer extra is missing.

Why this module: Python entry points cannot belong to one extra, so ``pip install '.[device]'``
(a Raspberry Pi) installs ``kws-train`` and ``kws-eval`` too. Without this check they
would start and die in a traceback on ``import keras`` somewhere in the middle of a
command. So the scripts stay, but they first check that the trainer extra's packages are
importable (without importing them: TensorFlow takes seconds) and otherwise say what to
install and exit 1. This module imports nothing of the trainer.
"""

from __future__ import annotations

import importlib.util
import sys

# Import names of the packages pyproject.toml's trainer extra installs (tensorflow-cpu installs `tensorflow`).
TRAINER_MODULES = ("tensorflow", "keras", "tqdm", "matplotlib")
INSTALL_HINT = "pip install -e '.[trainer]'"


def missing_trainer_modules() -> list[str]:
    """The trainer extra's modules that are not importable here (none on a workstation install)."""
    missing = []
    for name in TRAINER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            missing.append(name)
    return missing


def _check(program: str) -> None:
    missing = missing_trainer_modules()
    if missing:
        print(
            f"{program}: error: needs the trainer extra (missing: {', '.join(missing)}); "
            f"on a workstation, in the checkout: {INSTALL_HINT} (a device needs only `kws`)",
            file=sys.stderr,
        )
        raise SystemExit(1)


def train_main() -> int:
    """``kws-train``: :func:`trainer.cli.main` once the trainer extra is there."""
    _check("kws-train")
    from trainer.cli import main

    return main()


def eval_main() -> int:
    """``kws-eval``: :func:`trainer.evaluation.cli.main` once the trainer extra is there."""
    _check("kws-eval")
    from trainer.evaluation.cli import main

    return main()
