"""Sub-commands of the `prefscale` CLI, one module each.

A module here exposes `register(subparsers) -> None`, which adds its parser and sets `func` (a callable taking
the parsed `argparse.Namespace` and returning an exit code). `prefscale.cli` registers every module listed in
`COMMAND_MODULES` that exists.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "prefscale.commands.init",
    "prefscale.commands.alpacaeval",
    "prefscale.commands.bench",
    "prefscale.commands.score",
    "prefscale.commands.ablation",
    "prefscale.commands.audit",
    "prefscale.commands.train",
    "prefscale.commands.train_online",
    "prefscale.commands.export",
    "prefscale.commands.annotate",
)
