"""Device placement: ``--device`` / ``device:`` resolve to a torch device or fail in one line; a model
moved with ``Denoiser.to`` samples on that device and hands results back on the CPU."""

from __future__ import annotations

import pytest
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.models.denoiser import resolve_device
from diffsearch.models.loading import load_model
from diffsearch.search.config import load_config
from diffsearch.solvers.presets import preset_schedule

CUDA = torch.cuda.is_available()


def test_auto_is_cuda_only_when_visible():
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "tpu", ""])
def test_unknown_devices_name_the_allowed_ones(spec):
    with pytest.raises(DiffsearchError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve_device(spec)


def test_config_rejects_a_malformed_device():
    with pytest.raises(DiffsearchError, match="config device"):
        load_config(None, {"device": "gpu0"})


def test_to_moves_modules_and_tensors_and_records_the_device():
    model = load_model("digits").to("cpu")
    assert model.device == "cpu" and model.modules and all(p.device.type == "cpu" for p in model.modules[0].parameters())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["digits", "gmm"])
def test_cuda_evaluation_matches_cpu(name):
    """Same noise (drawn on the CPU), same schedule: the GPU result agrees with the CPU one."""
    cpu, gpu = load_model(name), load_model(name).to("cuda")
    assert next(gpu.modules[0].parameters()).is_cuda if gpu.modules else True
    schedule = preset_schedule("dpmpp_2m", 10, cpu.noise_schedule)
    metric = "fid" if name == "digits" else "frechet_exact"
    on_cpu = evaluate(cpu, schedule, samples=500, metrics=[metric])[metric]
    on_gpu = evaluate(gpu, schedule, samples=500, metrics=[metric])[metric]
    assert on_gpu == pytest.approx(on_cpu, rel=1e-3)
