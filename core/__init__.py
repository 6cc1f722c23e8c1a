"""The bottom room: errors, registries, parameter parsing and plugin discovery. Imports nothing else of ours."""
