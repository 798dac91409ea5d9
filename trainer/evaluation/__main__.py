"""``python -m trainer.evaluation`` = ``kws-eval``."""

import sys

from trainer.evaluation.cli import main

sys.exit(main())
