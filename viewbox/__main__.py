"""`python -m viewbox` is the `viewbox` command."""
import sys

from .cli import main

sys.exit(main())
