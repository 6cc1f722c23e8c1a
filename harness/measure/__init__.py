"""Measuring a cell: test-split quality and robustness (`quality`), what the stored and deployed model really is
(`evidence`), the figures of one cell gathered into its record (`cell`), and the two cost studies run as commands
(`batch_latency`: speedup against batch size and runtime; `fit_overhead`: what Lightning costs). Latency itself is
timed by `slimbench.deploy.latency`, the one place that times a model.
"""
