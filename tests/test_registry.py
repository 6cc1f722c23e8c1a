"""Registries: unique names, clear errors listing valid choices, wildcard listing, CLI `list`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from slimbench.baselines import MODELS, build_model
from slimbench.core.errors import ConfigError, UnknownNameError
from slimbench.core.registry import Registry
from slimbench.harness.cli import main
from slimbench.methods import METHODS, build_method, list_methods
from slimbench.tasks import TASKS, InputSpec, build_task


def test_duplicate_registration_is_an_error():
    reg: Registry[object] = Registry("widget")

    @reg.register("a")
    def first():
        """First."""

    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        @reg.register("a")
        def second():
            """Second."""

    assert reg.get("a") is first


def test_registering_an_existing_method_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        @METHODS.register("prune.magnitude")
        @dataclass
        class Again:
            pass


@pytest.mark.parametrize(
    "lookup, kind, valid",
    [
        (lambda: build_method("prune.magnitud"), "method", "prune.magnitude"),
        (lambda: build_task("fashion_mnist"), "task", "fashion-mnist"),
        (lambda: build_model("mobilenet", InputSpec(1, 8, 8), 10), "model", "mobilenetv2"),
    ],
)
def test_unknown_names_list_the_valid_choices(lookup, kind, valid):
    with pytest.raises(UnknownNameError) as err:
        lookup()
    message = str(err.value)
    assert message.startswith(f"unknown {kind} ")
    assert valid in message and f"valid {kind}s:" in message


def test_wildcard_listing():
    pruning = list_methods("prune.*")
    assert "prune.magnitude" in pruning and pruning == sorted(pruning)
    assert all(n.startswith("prune.") for n in pruning) and pruning == METHODS.names("prune.*")
    assert "baseline" not in list_methods("prune.*")
    assert set(TASKS.names("*mnist*")) >= {"fashion-mnist"}
    assert "mobilenetv2" in MODELS.names("mobile*")


def test_method_params_are_validated_with_the_valid_fields_named():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) sparsty; valid parameters: sparsity: float"):
        build_method("prune.magnitude", {"sparsty": 0.3})
    with pytest.raises(ConfigError, match="parameter 'sparsity' must be a number, got 'high'"):
        build_method("prune.magnitude", {"sparsity": "high"})
    with pytest.raises(ConfigError, match=r"must be one of \['global', 'layer', 'lamp'\]"):
        build_method("prune.magnitude", {"scope": "everywhere"})
    assert build_method("prune.magnitude", {"sparsity": 0.7}).sparsity == 0.7


def test_cli_list_prints_descriptions(capsys):
    assert main(["list", "methods", "prune.*"]) == 0
    out = capsys.readouterr().out
    assert "prune.magnitude" in out and "magnitude pruning" in out.lower()
    assert main(["list", "tasks", "nothing-like-this*"]) == 1
