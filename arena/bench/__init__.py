"""Benchmarks run from the command line: `python -m arena.bench <subcommand>` (see arena/bench/__main__.py).

    python -m arena.bench kernels        # KDA / GDN kernels vs fla and SDPA attention on one CUDA GPU
    python -m arena.bench model          # whole models against context: training, prefill, decode, cache bytes

Subcommands live in their own modules (arena/bench/kernels.py); byte counts of the memory floors in
arena/bench/floors.py; the table, CSV and plot in arena/bench/report.py. Importing this package touches no GPU.
"""
