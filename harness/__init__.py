"""slimbench harness: registries, planning, caching, measurement, records, reporting and the CLI.

Kept import-light on purpose: `tasks`, `baselines` and `methods` import the small shared utilities
(`harness.registry`, `harness.params`, `harness.errors`) without pulling in the rest.
"""
