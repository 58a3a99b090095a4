"""`python -m nxrun` is the `nxrun` command."""

from .cli import main

main()
