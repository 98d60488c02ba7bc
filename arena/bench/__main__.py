"""`python -m arena.bench <subcommand> [options]`: the benchmark command line; errors are one line, exit code 2.

    python -m arena.bench                     # usage and the list of subcommands
    python -m arena.bench kernels --help      # options of one subcommand
"""

from __future__ import annotations

import argparse
import sys

from arena.bench import kernels, model, train

SUBCOMMANDS = {
    "kernels": (kernels, "time KDA / GDN kernels (arena Triton, arena torch, fla) and SDPA attention on a CUDA GPU"),
    "train": (train, "time the full training step per mixer and T: ms/step, tokens/s, peak memory, mixer and kernel "
                     "fwd+bwd, batch generation"),
    "model": (model, "whole models against context: training tokens/s and memory, prefill, decode (batch 1 and "
                     "the largest), cache bytes per sequence"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (not usage + message) and exits with code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m arena.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}", title="subcommands")
    for name, (module, help_text) in SUBCOMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=(module.__doc__ or "").strip(),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return SUBCOMMANDS[args.command][0].main(args)


if __name__ == "__main__":
    sys.exit(main())
