"""`python -m nxrun` is the `nxrun` command."""

from .launch import main

main()
