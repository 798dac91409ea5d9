"""Where ``--write-benchmarks`` puts a dated section of ``BENCHMARKS.md``: under its final ``## Latest runs``.

The top of the file is the shipped encoder's summary and the history of experiments, written by hand from
measured sections; ``make eval`` (``kws-eval --write-benchmarks``) and ``make bench`` (``trainer.bench
--write-benchmarks``) never touch it. Their sections go at the end, under ``## Latest runs``, newest last,
until someone reads a run into the summary or into its experiment's page under ``docs/experiments/``.
"""

from __future__ import annotations

from pathlib import Path

LATEST_RUNS = "## Latest runs"
LATEST_RUNS_NOTE = "Sections `make eval` and `make bench` append (`--write-benchmarks`), newest last."


def append_section(path: Path | str, section: str, title: str = "# Benchmarks\n") -> None:
    """Append ``section`` under the file's ``## Latest runs`` heading, adding the heading (and the file) if missing.

    Once the heading is there every later section comes after it, so appending at the end of the file is
    appending under it, in date order.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else title
    text = text.rstrip("\n")
    if LATEST_RUNS not in text.splitlines():
        text += f"\n\n{LATEST_RUNS}\n\n{LATEST_RUNS_NOTE}"
    path.write_text(text + "\n\n" + section.strip("\n") + "\n")
