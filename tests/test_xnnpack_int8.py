"""ExecuTorch's own int8 flow as a peer (`peer.xnnpack_int8`): PT2E with the XNNPACK quantizer, lowered to a `.pte`.

The program is the model as it ships: its bytes are the stored form and the artifact, they reload to the same
outputs, and what they hold (int8 constants, int8 XNNPACK kernels) is read back from them; only ExecuTorch runs it.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from slimbench.core.errors import NotApplicableError, StoredFormError
from slimbench.deploy.counting import count_macs, serialized_sizes
from slimbench.deploy.executorch_runtime import (
    ExecutorchModel,
    ProgramPacked,
    lower_to_xnnpack,
    program_contents,
    program_packed,
)
from slimbench.deploy.packing import Packed
from slimbench.deploy.runtimes import check_packed, deploy, load_artifact, stored_form, torch_form
from slimbench.harness.measure.evidence import compute_evidence, gather, storage_evidence
from slimbench.harness.measure.quality import evaluate_test
from slimbench.harness.measure.runtime_quality import quality_by_runtime
from slimbench.methods import build_method
from tests.conftest import method_context

# wide enough that the weights, not the program's fixed overhead, make up most of the .pte
TRAINED = {"width": 64, "epochs": 4}


@pytest.fixture(scope="module")
def outcome(trained, task):
    return build_method("peer.xnnpack_int8", {"calibration_samples": 64}).apply(trained, method_context(task, trained))


@pytest.fixture(scope="module")
def deployed(outcome, task):
    return deploy(outcome.model, "executorch", task.example_input(8), threads=1)


def test_the_program_is_int8_in_storage_and_in_the_kernels_xnnpack_runs(outcome, deployed, trained, task):
    program = outcome.model
    assert outcome.runtime == "executorch" and isinstance(program, ExecutorchModel) and program.precision == "int8"
    assert outcome.compute == "physical" and outcome.achieved["int8_weight_fraction"] == 1.0
    fp32 = lower_to_xnnpack(trained, task.example_input(2), program.max_batch)
    assert len(fp32) >= 3 * len(program.pte), (len(fp32), len(program.pte))
    # read back from the bytes: every weight int8, every convolution and the classifier an int8 XNNPACK kernel
    assert program_contents(program.pte).kernels == {"int8": 3}
    assert program_contents(fp32).kernels == {"float32": 3}
    storage = storage_evidence(stored_form(program))
    assert storage.label == "int8" and storage.bits_per_weight == 8.0
    assert storage.weights == sum(p.numel() for n, p in trained.named_parameters() if p.dim() >= 2)
    float_storage = storage_evidence(program_packed(ExecutorchModel(fp32, program.max_batch, None)))
    assert float_storage.label == "dense fp32" and float_storage.bits_per_weight == 32.0
    macs = count_macs(trained, task.example_input(1))
    assert count_macs(torch_form(program), task.example_input(1)) == macs
    assert compute_evidence(deployed, torch_form(program), macs, macs, storage.sparsity).label == "int8"
    evidence = gather(stored_form(program), deployed, torch_form(program), macs, macs, outcome.compute,
                      outcome.requested, outcome.achieved)
    assert evidence.disagreements == []
    # a claim the program contradicts is caught
    claims_4_bits = gather(stored_form(program), deployed, torch_form(program), macs, macs, outcome.compute,
                           outcome.requested, {**outcome.achieved, "weight_bits": 4})
    assert "claims 4 bits per weight" in claims_4_bits.disagreements[0]


def test_it_keeps_the_trained_models_predictions(deployed, trained, task):
    int8, float32 = evaluate_test(deployed, task), evaluate_test(trained, task)
    agreement = float((int8.predictions == float32.predictions).float().mean())
    assert agreement >= 0.95, agreement
    assert abs(int8.accuracy - float32.accuracy) < 0.03 and float32.accuracy > 0.8


def test_the_stored_program_reloads_to_the_same_outputs(outcome, deployed, task):
    program = outcome.model
    packed = stored_form(program)
    check_packed(packed, program)
    assert packed.nbytes == len(program.pte)
    data, _ = serialized_sizes(packed)

    def no_constructor():
        raise AssertionError("a program is rebuilt from its own bytes, not from the model's constructor")

    back = load_artifact(data, no_constructor)
    assert isinstance(back, ExecutorchModel) and back.pte == program.pte and back.precision == "int8"
    x = task.example_input(100)   # more than the program's batch axis: run in chunks
    with torch.inference_mode():
        want = deployed(x)
        assert torch.equal(deploy(back, "executorch", x[:8], threads=1)(x), want)
        assert torch.equal(pickle.loads(pickle.dumps(deployed))(x), want)   # to the latency process
    with pytest.raises(StoredFormError, match="not the model's .pte"):
        check_packed(ProgramPacked(program=program.pte[:-1]), program)
    with pytest.raises(StoredFormError, match="not the program"):
        check_packed(Packed(), program)


def test_other_runtimes_refuse_it_with_a_reason(outcome, deployed, task):
    x = task.example_input(8)
    for runtime, name in (("eager", "eager"), ("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO"),
                          ("compile", "torch.compile")):
        with pytest.raises(NotApplicableError, match=f"int8 ExecuTorch program .* runs only in ExecuTorch; it has no "
                                                     f"{name} form"):
            deploy(outcome.model, runtime, x, threads=1)
    evaluation = evaluate_test(deployed, task)
    out = quality_by_runtime(outcome.model, ("eager", "onnxruntime", "openvino", "executorch"), "executorch",
                             deployed, evaluation, task, x)
    assert out["executorch"].accuracy == evaluation.accuracy and out["executorch"].file_bytes == len(deployed.pte)
    assert out["executorch"].ran["precision"] == "int8"
    for runtime in ("eager", "onnxruntime", "openvino"):
        assert "runs only in ExecuTorch" in (out[runtime].unavailable or "") and out[runtime].accuracy is None
