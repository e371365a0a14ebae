"""`python -m instraug_plugin` runs the CLI."""

from instraug_plugin.cli import main

main()
