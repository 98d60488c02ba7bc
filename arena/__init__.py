"""arena: a harness for comparing sequence-mixing architectures (KDA, GDN, Mamba2, MLA and hybrids).

Start with `python -m arena.run` (see README.md). Importing this package has no side effects.
"""

__version__ = "0.1.0"
