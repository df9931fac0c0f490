"""The `gapkit` command line (installed as gapkit.cli)."""
