"""What each model costs to train: the baselines' test accuracy beside their seconds per epoch, and every cell that
trains (a fine-tune, a distilled student) beside the baseline it came from, per training example, so "a smaller
model trains faster" is read from timings rather than assumed.

Seconds per 1k examples, not per epoch, are compared: a fine-tune draws fewer batches per epoch than its baseline.
Epochs are timed without validation, on the threads of the process that trained them (the baseline's in the model
cache, the cell's in its record), so contention on the machine while either trained widens the spread shown.
"""

from __future__ import annotations

import json
from collections import defaultdict

from tabulate import tabulate

from slimbench.harness.report.stats import mean, params_given_json, short_params, std
from slimbench.harness.run.record_parts import BaselineTraining, Fit, fits_seconds_per_example
from slimbench.harness.run.records import RunRecord


def _ms_per_1k(seconds_per_example: float | None) -> float | None:
    return 1e6 * seconds_per_example if seconds_per_example is not None else None


def _reached(fit: Fit, target: float) -> int | None:
    """The first epoch (1-based) whose validation accuracy reached the baseline's kept one."""
    return next((i + 1 for i, acc in enumerate(fit.val_acc) if acc >= target), None)


def _spread(values: list[float], fmt: str) -> str:
    return format(mean(values), fmt) + (f" ± {format(std(values), fmt)}" if len(values) > 1 else "")


def baseline_table(records: list[RunRecord], task: str) -> list[list[str]]:
    """One row per model trained for `task`: its baselines' test accuracy and epoch timings over seeds."""
    by_model: dict[tuple[str, str], dict[int, BaselineTraining]] = defaultdict(dict)
    for rec in records:
        if rec.status == "ok" and rec.task == task and rec.baseline_training is not None:
            budget = json.dumps(rec.baseline_training.train, sort_keys=True)
            by_model[(rec.model, budget)][rec.seed] = rec.baseline_training
    rows = []
    for (model, _), seeds in sorted(by_model.items()):
        bases = [seeds[s] for s in sorted(seeds)]
        epoch_s = [sum(b.epoch_seconds) / len(b.epoch_seconds) for b in bases if b.epoch_seconds]
        per_1k = [v for b in bases if (v := _ms_per_1k(b.seconds_per_example())) is not None]
        rows.append([model, " ".join(str(s) for s in sorted(seeds)),
                     _spread([b.test_accuracy for b in bases], ".4f"), str(bases[0].epochs),
                     str(bases[0].train_batches * int(bases[0].train["batch_size"])) if bases[0].train_batches else "—",
                     _spread(epoch_s, ".1f") if epoch_s else "not timed",
                     _spread(per_1k, ".0f") if per_1k else "not timed"])
    return rows


def fit_table(records: list[RunRecord], task: str) -> list[list[str]]:
    """One row per task × model × method × parameters whose cells trained: their training cost per example beside
    the same-seed baseline's, and the epoch their validation accuracy first reached the baseline's."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for rec in records:
        if rec.status == "ok" and rec.task == task and rec.fits and rec.family != "baseline":
            groups[(rec.model, rec.method, params_given_json(rec))].append(rec)
    rows = []
    for (model, method, params), recs in sorted(groups.items()):
        recs.sort(key=lambda r: r.seed)
        own = [v for r in recs if (v := _ms_per_1k(fits_seconds_per_example(r.fits))) is not None]
        ratios = [b / o for r in recs if r.baseline_training is not None
                  and (b := r.baseline_training.seconds_per_example()) is not None
                  and (o := fits_seconds_per_example(r.fits))]
        reached = []
        for r in recs:
            target = r.baseline_training.val_acc if r.baseline_training is not None else None
            at = _reached(r.fits[-1], target) if target is not None else None
            reached.append(f"{at}/{len(r.fits[-1].val_acc)}" if at is not None else "no")
        speed = (f"{mean(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1
                 else f"{ratios[0]:.2f}×" if ratios else "—")
        rows.append([model, method, short_params(params), " ".join(str(r.seed) for r in recs),
                     str(sum(len(f.epoch_seconds) for f in recs[0].fits)),
                     _spread(own, ".0f") if own else "—", speed, " ".join(reached)])
    return rows


def markdown(records: list[RunRecord], task: str) -> list[str]:
    """The task's training-time section; empty where no record of it carries timed training."""
    bases, fits = baseline_table(records, task), fit_table(records, task)
    if not fits and all(row[5] == "not timed" for row in bases):   # records from before epochs were timed
        return []
    lines = ["### Training time", "",
             "Seconds per epoch and per 1k training examples (mean ± std over seeds), validation left out. "
             "Baselines are timed where they were trained (the model cache); a cell's fits (fine-tunes, students) "
             "on the cell's threads. Speed is the same-seed baseline's ms per example ÷ the fit's (range over "
             "seeds); 'reached' is the first fit epoch whose validation accuracy reached the baseline's, per seed.",
             ""]
    if bases:
        lines += [tabulate(bases, headers=["model", "seeds", "test accuracy", "epochs", "examples / epoch",
                                           "s / epoch", "ms / 1k examples"], tablefmt="github"), ""]
    if fits:
        lines += [tabulate(fits, headers=["model", "method", "params", "seeds", "fit epochs", "ms / 1k examples",
                                          "speed vs baseline", "reached baseline val acc"], tablefmt="github"), ""]
    return lines
