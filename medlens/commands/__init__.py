"""Subcommands of the ``medlens`` CLI: one module each, with ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``run`` as the parser default::

    def register(sub):
        p = sub.add_parser("inspect", help="...")
        p.add_argument(...)
        p.set_defaults(run=run)
"""
