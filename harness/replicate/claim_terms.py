"""The fixed words of the claims registry: verdict names, the caps on how loose a rule may be, the values a records
claim can measure, and the compute kernels a speed claim may require. Kept apart so the schema, the verdicts and
the tables all read one list.
"""

from __future__ import annotations

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
SMALLER = "same direction, smaller effect"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
NEEDS_DATA = "needs data"
NEEDS_GPU = "needs GPU"
NEEDS_DATA_AND_GPU = "needs data and GPU"
NOT_MEASURED = "not measured"          # not a verdict: no record yet; the table names the command that makes one
VERDICTS = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED, NOT_TESTABLE, NEEDS_DATA, NEEDS_GPU, NEEDS_DATA_AND_GPU)

CLOSE_TO_CAP = 0.05                    # close_to: the band is at most 5 % of the published value
AT_LEAST_CAP = 0.10                    # at_least: the allowance is at most 10 % of the published effect

# values a records claim can measure; per-record ones can also be paired (A − B, seed by seed)
PER_RECORD = ("compression_x", "gzip_x", "macs_x", "connections_x", "accuracy_pts", "delta_accuracy_pts",
              "delta_macro_f1_pts", "delta_vs_teacher_pts", "corrupted_accuracy_pts", "corrupted_minus_clean_pts",
              "faithfulness_pts", "train_speedup_x")
# paired only, and only against a baseline: the worst class's Δ beyond the overall Δ, less the same figure between
# two baseline seeds (Hooker et al.'s "the damage is concentrated in a few classes", net of retraining's churn); the
# attributions' agreement with the same-seed baseline, less the same agreement between two baseline seeds
PAIRED_ONLY = ("worst_class_excess_pts", "agreement_minus_floor_pts")
# read from the leaderboard row (its timing band): the batch-1 speedup, the batch-N one (throughput, the measure of
# papers that time large batches), and the MACs ratio over the batch-1 speedup
ROW_VALUES = ("speedup_b1_x", "speedup_bn_x", "macs_x_over_speedup_b1")
NOISY = ("accuracy_pts", "delta_accuracy_pts", "delta_macro_f1_pts", "delta_vs_teacher_pts", "corrupted_accuracy_pts",
         "corrupted_minus_clean_pts", "worst_class_excess_pts")   # carry the seeds' spread
DELTA_VS_BASELINE = ("delta_accuracy_pts", "delta_macro_f1_pts")   # a Δ against the row's own baseline

# `requires: {compute: ...}`: the parts of the measured compute label (harness/measure/evidence.py) that satisfy
# each value
COMPUTE_REQUIREMENTS = {
    "physical-sparse": ("sparse", "smaller dense"),   # pruned weights really skipped: a sparse or a smaller kernel
    "smaller-dense": ("smaller dense",),              # fewer multiply-adds executed than the reference
    "int8": ("int8",),                                # int8 kernels executed
}
