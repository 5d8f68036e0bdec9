"""Subcommands of `tuneops`, one module each, discovered by tuneops.cli (see its build_parser)."""
