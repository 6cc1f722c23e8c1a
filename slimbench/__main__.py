"""`python -m slimbench` is the `slimbench` command."""

import sys

from slimbench.harness.cli import main

sys.exit(main())
