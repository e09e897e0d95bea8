"""`python -m viewbox` is the `viewbox` command."""
from .cli import console_main

console_main()
