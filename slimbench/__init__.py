"""slimbench: reproducible benchmarks of neural-network compression.

The package's rooms live in the repository's top-level folders and are mapped into this namespace
(see ARCHITECTURE.md): `slimbench.core`, `slimbench.tasks`, `slimbench.baselines`, `slimbench.deploy`,
`slimbench.methods`, `slimbench.harness`, and the shipped suites in `slimbench.configs`.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("slimbench")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
