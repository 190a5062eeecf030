"""`python -m server` runs the `steerboard` command line."""

from server.cli import main

main()
