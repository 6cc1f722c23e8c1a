"""slimbench: reproducible benchmarks of neural-network compression.

The package's rooms live in the repository's top-level folders and are mapped into this namespace
(see ARCHITECTURE.md): `slimbench.core`, `slimbench.tasks`, `slimbench.baselines`, `slimbench.deploy`,
`slimbench.methods`, `slimbench.harness`, and the shipped suites in `slimbench.configs`.
"""

from importlib import metadata as _metadata
from pkgutil import extend_path

# An editable install links the rooms under build/; run from the repository root, this folder is found first and
# would hide them, so the package spans every `slimbench` folder on the path (editors read this line too).
__path__ = extend_path(__path__, __name__)

try:
    __version__ = _metadata.version("slimbench")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
