"""Folio's version, on the ground floor: checkpoints record it (`folio_version` in config.json) and the CLI and
the HTTP API report it, none of which should import the package root (and with it a task) to read it."""

__version__ = "0.1.0"  # pyproject.toml's [project] version
