"""One module per `ste-ablate` subcommand; each exposes `register(subparsers)`."""
