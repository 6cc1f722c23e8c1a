"""Reporting from run records only: leaderboards per method and per task (`leaderboards`, assembled by `build`),
seed statistics and noise marks (`stats`), the sweep, robustness, distillation and per-layer tables a method asks
for, and the Pareto plots. Every figure printed here is read from a record, never typed in.
"""
