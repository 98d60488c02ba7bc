"""The parts of scripts/fla_layer_parity.py (arena's KDA, GDN and Mamba2 layers against fla's), one module each:

    cases.py       the cases, the intended differences, the tolerances and the arena impls
    fla_import.py  importing fla's three layer modules without transformers; which Mamba2 path fla takes
    naive_ops.py   CPU: the Triton interpreter's autotuning and the naive stand-ins for fla's chunk ops
    mapping.py     the reference's constructor arguments and the parameter mappings, `load_mapped`
    runner.py      one case end to end (forward, backward, compare), the probes of the differences, the table

The script puts scripts/ on sys.path and imports them as `fla_parity.<module>`; nothing here imports torch, Triton
or fla at import time (the script sets TRITON_INTERPRET first). Run through `python scripts/fla_layer_parity.py`;
tests: tests/test_fla_parity_script.py.
"""
