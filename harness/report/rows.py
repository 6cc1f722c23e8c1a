"""The rows every table is built from: a leaderboard row (the mean and spread of one setting's records), a failed
cell's row, and a matrix cell. Their `columns()` name the CSV columns, so files and W&B tables read alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RobustnessFigures:
    """A row's robustness columns, each paired seed by seed with its baseline (None where a record or its baseline
    lacks them)."""

    mean_corrupted_accuracy: float | None = None     # accuracy over every corrupted test copy, mean over seeds
    delta_corrupted: float | None = None             # that, minus the same-seed baseline's, mean over seeds
    delta_corrupted_std: float | None = None         # the paired Δ's spread over seeds
    delta_corrupted_significant: bool | None = None  # beyond the paired spread and the baseline's own
    baseline_corrupted_std: float | None = None      # the baseline's seed spread of corrupted accuracy (≥ 2 seeds)
    worst_class: str | None = None                   # the class whose clean accuracy fell most against the baseline
    delta_worst_class: float | None = None           # that class's accuracy change, mean over seeds
    worst_class_churn: float | None = None           # worst-class Δ (pts) between two baseline seeds, mean over pairs
    cie: float | None = None                         # test examples right for the baseline and wrong here, mean
    cie_churn: float | None = None                   # the same count between two baseline seeds, mean over pairs


@dataclass
class ExplanationFigures:
    """A row's explanation columns (Integrated Gradients), faithfulness paired seed by seed with the same-seed baseline
    and agreement set beside the baseline's own seed-to-seed agreement (None where a record or its baseline lacks
    them)."""

    attributed: str | None = None                    # which model was attributed ("/" joined when seeds differ)
    deletion_auc: float | None = None                # mean over seeds; lower = more faithful
    insertion_auc: float | None = None               # mean over seeds; higher = more faithful
    random_deletion_auc: float | None = None         # the same inputs removed in a random order, mean over seeds
    delta_deletion_auc: float | None = None          # deletion AUC − the same-seed baseline's, mean over seeds
    delta_deletion_auc_std: float | None = None      # the paired Δ's spread over seeds
    delta_deletion_significant: bool | None = None   # beyond the paired spread and the baseline's own
    delta_insertion_auc: float | None = None
    delta_insertion_auc_std: float | None = None
    delta_insertion_significant: bool | None = None
    baseline_deletion_auc_std: float | None = None   # the baseline's seed spread (≥ 2 seeds)
    baseline_insertion_auc_std: float | None = None
    agreement_spearman: float | None = None          # rank correlation with the same-seed baseline, mean over seeds
    agreement_spearman_std: float | None = None
    agreement_top_k: float | None = None             # shared top-10 % features with the baseline, mean over seeds
    floor_spearman: float | None = None              # the same between two baseline seeds, mean over seed pairs
    floor_spearman_std: float | None = None
    floor_top_k: float | None = None
    inside_floor: bool | None = None                 # agreement not below the floor beyond either's spread: noise

    @property
    def measured(self) -> bool:
        return self.deletion_auc is not None


@dataclass
class LeaderboardRow:
    """One task × model × method × params × code versions: the mean and spread of its records."""

    task: str
    model: str
    method: str
    params_json: str                     # the method's full parameters (JSON, sorted keys): what groups records
    seeds: str                           # the seeds averaged, space-separated
    accuracy: float                      # test accuracy, mean over seeds
    accuracy_std: float                  # its sample std over seeds (0 for one seed)
    macro_f1: float                      # test macro-F1, mean over seeds
    params: int                          # parameters, mean over seeds
    nonzero_params: int                  # non-zero parameters, mean over seeds
    stored_bytes: int                    # the packed stored form's tensor bytes, mean over seeds
    gzip_bytes: int                      # gzip of the artifact file, mean over seeds
    compression_x: float                 # the like-for-like reference's stored bytes ÷ the model's, mean over seeds
    macs: int                            # multiply-adds of one example, mean over seeds
    latency_b1_ms: float                 # batch-1 latency in the deployed runtime, mean over seeds
    latency_bn_ms: float                 # batch-N latency in the deployed runtime, mean over seeds
    speedup_b1_x: float                  # reference ÷ model batch-1 latency, same runtime and process, mean
    label: str                           # the records' compression labels, joined with "/"
    requested: str                       # what the method was asked for (JSON, the first record's)
    achieved: str                        # the measured counterparts of the claims (JSON, mean over seeds)
    run_ids: str                         # the records behind the row, space-separated
    runtime: str                         # where the model is deployed (joined with "/" when the seeds differ)
    speedup_bn_x: float                  # reference ÷ model batch-N latency, mean over seeds
    delta_accuracy: float                # accuracy − the same seed's baseline accuracy, mean over seeds
    delta_accuracy_std: float            # the paired Δ's spread over seeds
    delta_significant: bool              # Δ beyond both the paired spread and the baseline's seed spread
    storage: str                         # measured storage labels, joined with "/"
    compute: str                         # measured compute labels, joined with "/"
    claim_verified: bool                 # no record's claim is contradicted by its measurement
    speedup_b1_low: float | None         # the widest interleaved-round band of the batch-1 speedup (None: untimed)
    speedup_b1_high: float | None
    speedup_bn_low: float | None         # the same for batch N
    speedup_bn_high: float | None
    compression_raw_x: float             # the raw state dict's stored bytes ÷ the model's, mean over seeds
    provenance: str                      # the commit(s) the records name, and whether a tree was dirty
    family: str                          # the method family (not a column: orders rows, marks baselines)
    params_given: str                    # the parameters the suite file set (JSON; not a column: labels show them)
    latency_batch: int | None            # the N of batch-N latency (not a column: table headers show it)
    baseline_accuracy_std: float | None = None   # the same task × model baseline's seed std (None under 2 seeds)
    baseline_seeds: int = 0              # how many seeds that baseline has
    robustness: RobustnessFigures = field(default_factory=RobustnessFigures)
    explanations: ExplanationFigures = field(default_factory=ExplanationFigures)

    status = "ok"                        # beside failed cells in the per-method table
    error = ""

    def columns(self) -> dict[str, Any]:
        """Every CSV column's value (the per-method table's status and error included)."""
        skip = {"family", "params_given", "latency_batch", "robustness", "explanations"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        explained = {f"explanations_{k}": v for k, v in asdict(self.explanations).items()}
        return {**out, **asdict(self.robustness), **explained, "status": self.status, "error": self.error}


@dataclass
class FailedRow:
    """A cell without a measurement: failed (the error it ended with) or n/a (why the method cannot apply to the
    model); either keeps its place in every table."""

    task: str
    model: str
    method: str
    family: str
    params_json: str                     # the method's full parameters (JSON, sorted keys)
    params_given: str                    # the parameters the suite file set (JSON)
    seeds: str                           # the cell's seed
    status: str                          # the record's status ("failed" or "n/a")
    error: str                           # the error the cell ended with, or why the method does not apply
    run_ids: str                         # the cell's record

    def columns(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MatrixCell:
    """A method's best setting on one task (the row that lost the least accuracy) and how many were tried."""

    row: LeaderboardRow
    settings_tried: int

    def columns(self) -> dict[str, Any]:
        return {**self.row.columns(), "settings_tried": self.settings_tried}
