"""The command line: one module per command, each with `add_parser(subparsers)`; `main` wires them up."""
