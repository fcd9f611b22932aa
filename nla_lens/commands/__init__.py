"""Subcommands of the ``nla-lens`` CLI; each module defines ``register(subparsers)``."""
