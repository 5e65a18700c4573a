"""``python -m skfewshot``: the same as the ``skfewshot`` command."""

import sys

from skfewshot.cli import main

sys.exit(main())
