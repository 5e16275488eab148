"""One module per `ste-ablate` command (`analyze` holds three: snapshot, analyze, figures), each
with `register(subparsers)`; `runners.cli.command_module` imports one when its command is named."""
