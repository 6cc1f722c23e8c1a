"""Bad suites fail at parse time: one clear error naming the field, the value and what is allowed; exit 2;
nothing written. Numbers written the way people write them (1e-3) are numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimbench.harness.cli import main
from slimbench.harness.run.suite import load_suite

# (name, edit of the smoke suite, words the one error line must contain)
BAD = [
    ("negative epochs", {"train": {"epochs": -3}}, ["epochs", "-3", "≥ 1"]),
    ("nan lr", {"train": {"lr": float("nan")}}, ["lr", "finite"]),
    ("zero lr", {"train": {"lr": 0}}, ["lr", "> 0"]),
    ("negative lr in sci notation", {"train": {"lr": "-1e-3"}}, ["lr", "-0.001", "> 0"]),
    ("infinite finetune lr", {"finetune": {"lr": float("inf")}}, ["finetune", "lr", "finite"]),
    ("zero batch", {"train": {"batch_size": 0}}, ["batch_size", "0", "≥ 1"]),
    ("fractional epochs", {"train": {"epochs": 2.5}}, ["epochs", "integer", "2.5"]),
    ("negative weight decay", {"train": {"weight_decay": -1e-4}}, ["weight_decay", "≥ 0"]),
    ("momentum 1.5", {"train": {"momentum": 1.5}}, ["momentum", "1.5", "< 1"]),
    ("label smoothing 1", {"finetune": {"label_smoothing": 1.0}}, ["label_smoothing", "< 1"]),
    ("zero batches per epoch", {"train": {"max_train_batches": 0}}, ["max_train_batches", "≥ 1"]),
    ("teacher epochs 0", {"teacher": {"name": "tiny-cnn", "train": {"epochs": 0}}}, ["teacher", "epochs", "≥ 1"]),
    ("zero latency rounds", {"measure": {"rounds": 0}}, ["rounds", "≥ 1"]),
    ("infinite timing", {"measure": {"min_run_time": float("inf")}}, ["min_run_time", "finite"]),
    ("zero calibration samples", {"methods": [{"name": "quant.ptq_int8", "params": {"calibration_samples": 0}}]},
     ["calibration_samples", "0"]),
    ("sparsity above 1", {"methods": [{"name": "prune.magnitude", "params": {"sparsity": 1.5}}]},
     ["sparsity", "1.5"]),
    ("zero validation split", {"tasks": [{"name": "digits", "params": {"val_size": 0}}]}, ["val_size", "≥ 1"]),
    ("suite escaping the results root", {"suite": "../../elsewhere"}, ["suite name", "../../elsewhere"]),
    ("suite name with a slash", {"suite": "a/b"}, ["suite name", "a/b"]),
    ("same method twice", {"methods": ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                                       {"name": "prune.magnitude", "params": {"sparsity": 0.5}}]},
     ["prune.magnitude", "twice"]),
    ("same seed twice", {"seeds": [0, 0]}, ["seeds", "distinct"]),
    ("negative seed", {"seeds": [-1]}, ["seeds", "-1"]),
    ("exclude removes everything", {"exclude": [{"model": "*"}]}, ["exclude", "every cell"]),
    ("extra seeds matching nothing", {"extra_seeds": [{"model": "squeezenet", "seeds": [1]}]},
     ["extra_seeds", "matches no cell"]),
    ("extra seeds without seeds", {"extra_seeds": [{"method": "baseline"}]}, ["extra_seeds", "seeds"]),
    ("unknown method", {"methods": ["prune.magnitud"]}, ["unknown method", "prune.magnitude"]),
    ("unknown train field", {"train": {"epoch": 3}}, ["epoch", "valid parameters"]),
    ("missing plugin file", {"imports": ["no_such_dir/plugin.py"]}, ["plugin file", "does not exist"]),
    ("unknown top-level key", {"tasks_": []}, ["tasks_", "valid keys"]),
]


def _suite_text(base: dict, edit: dict) -> str:
    """YAML as a user would write it: numbers like -1e-3 unquoted (YAML 1.1 would read them as strings)."""
    config = {**base, **edit}
    text = yaml.safe_dump(config, sort_keys=False)
    return text.replace("'-1e-3'", "-1e-3")


@pytest.mark.parametrize("name,edit,words", BAD, ids=[b[0] for b in BAD])
def test_bad_suite_is_one_clear_error_and_writes_nothing(name, edit, words, smoke_config, tmp_path: Path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(_suite_text(smoke_config, edit))
    results = tmp_path / "results"
    code = main(["run", str(path), "--results", str(results), "--wandb", "disabled"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("slimbench: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], f"{word!r} missing from: {lines[0]}"
    assert not results.exists()


def test_scientific_notation_is_a_number(smoke_config, tmp_path: Path):
    path = tmp_path / "suite.yaml"
    text = yaml.safe_dump(smoke_config, sort_keys=False)
    text = text.replace("lr: 0.01", "lr: 1e-3").replace("lr: 0.002", "lr: 5E-4")
    text += "description: one\n"
    path.write_text(text)
    suite = load_suite(path)
    assert suite.cells[0].train.lr == pytest.approx(1e-3)
    assert suite.cells[0].finetune.lr == pytest.approx(5e-4)
    path.write_text(text.replace("epochs: 1", "epochs: 1\n  max_train_batches: 1e+2").replace("1e+2", "100"))
    assert load_suite(path).cells[0].finetune.max_train_batches == 100


def test_a_shipped_suite_loads_by_name_from_any_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = load_suite("quick")
    assert suite.name == "quick" and len(suite.cells) > 10
    with pytest.raises(Exception, match="shipped suites: .*quick"):
        load_suite("no-such-suite")


def test_exclude_can_name_method_params(smoke_config, tmp_path: Path):
    smoke_config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                               {"name": "prune.magnitude", "params": {"sparsity": 0.8}}]
    smoke_config["exclude"] = [{"method": "prune.*", "params": {"sparsity": 0.8}}]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    labels = [c.label for c in load_suite(path).cells]
    assert labels == ["digits/tiny-cnn/baseline/s0", "digits/tiny-cnn/prune.magnitude[sparsity=0.5]/s0"]


def test_extra_seeds_add_cells_only_where_a_rule_matches(smoke_config, tmp_path: Path):
    smoke_config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                               {"name": "prune.magnitude", "params": {"sparsity": 0.8}}]
    smoke_config["extra_seeds"] = [{"method": "baseline", "seeds": [1, 2]},
                                   {"method": "prune.*", "params": {"sparsity": 0.8}, "seeds": [0, 2]}]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    labels = [c.label for c in load_suite(path).cells]
    assert labels == ["digits/tiny-cnn/baseline/s0", "digits/tiny-cnn/baseline/s1", "digits/tiny-cnn/baseline/s2",
                      "digits/tiny-cnn/prune.magnitude[sparsity=0.5]/s0",
                      "digits/tiny-cnn/prune.magnitude[sparsity=0.8]/s0",
                      "digits/tiny-cnn/prune.magnitude[sparsity=0.8]/s2"]


def test_a_parameter_added_later_keeps_finished_run_ids_until_it_is_set(smoke_config, tmp_path: Path):
    """`added` knobs (e.g. prune.channel's recover) leave a default cell's run_id as it was before they existed."""
    base = {"name": "prune.channel", "params": {"macs_ratio": 2.0}}
    smoke_config["methods"] = [base, {"name": "prune.channel", "params": {"macs_ratio": 2.0, "recover": "finetune"}}]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    with pytest.raises(Exception, match="twice"):   # the default written out is the same cell
        load_suite(path)
    smoke_config["methods"] = [base, {"name": "prune.channel", "params": {"macs_ratio": 2.0, "recover": "distill"}},
                               {"name": "prune.channel", "params": {"macs_ratio": 2.0, "recover": "distill",
                                                                    "kd_alpha": 0.5}}]
    path.write_text(yaml.safe_dump(smoke_config))
    cells = [c for c in load_suite(path).cells if c.seed == 0]
    default, distill, alpha = (c.method.params for c in cells)
    assert "recover" not in default and {"importance", "rounds", "round_to"} <= set(default)   # the rest: all there
    assert distill["recover"] == "distill" and "kd_alpha" not in distill
    assert alpha["kd_alpha"] == 0.5
    assert len({c.run_id for c in cells}) == 3
