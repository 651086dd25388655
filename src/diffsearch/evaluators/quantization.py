"""Quantisation statistics of a model on one sampling schedule: time-aware calibration, per-layer
sensitivities (MixDQ-style output SQNR, HAWQ-V2 Hessian traces) and the HAWQ-V3 ILP allocation.

Everything is measured on the calibration noise set (``CALIBRATION_SEED``), disjoint from the search
(0), held-out (1..100), teacher and floor seeds, over the timesteps the schedule visits
(Q-Diffusion's time-aware calibration): the full-precision sampler runs once from that noise and
every model evaluation's input (x_t, t) is kept. Results are cached on disk per (model weights,
schedule, settings) under ``$DIFFSEARCH_CACHE/quantization``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.noise import CALIBRATION_SEED, noise_set
from diffsearch.files import atomic_write_text
from diffsearch.models.bits import BITWIDTHS, QuantizationLayout
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.quantize import fake_quantize_weight
from diffsearch.solvers.plan import schedule_fingerprint
from diffsearch.solvers.sampler import sample
from diffsearch.solvers.schedule import Schedule

CALIBRATION_SAMPLES = 64
SENSITIVITY_SAMPLES = 16
HUTCHINSON_PROBES = 32
STATISTICS_VERSION = "quantization/v2"  # v2: layers fed the network input keep float inputs


class LayerStatistics(BaseModel):
    """Per-layer calibration ranges and sensitivities of one model on one schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: layer -> calibrated (low, high) of its input over every visited timestep.
    ranges: dict[str, tuple[float, float]]
    #: layer -> bits -> SQNR (dB) of the network output with only that layer's weights quantised.
    sqnr: dict[str, dict[int, float]]
    #: layer -> Hutchinson estimate of Tr(H_l) of the denoising loss (HAWQ-V2).
    hessian_trace: dict[str, float]
    #: layer -> bits -> ||Q_b(W_l) - W_l||^2.
    weight_error: dict[str, dict[int, float]]
    #: samples, probes and schedule the statistics were measured with (provenance).
    settings: dict[str, Any]

    def omega(self, layout: QuantizationLayout) -> dict[str, dict[int, float]]:
        """HAWQ-V2 sensitivity Omega_l(b) = Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2 (traces clamped at 0)."""
        params = {layer.name: layer.params for layer in layout.layers}
        return {name: {bits: max(self.hessian_trace[name], 0.0) / params[name] * error for bits, error in errors.items()}
                for name, errors in self.weight_error.items()}

    def free_statistics(self, layout: QuantizationLayout, bits: dict[str, int]) -> dict[str, float]:
        """An allocation's summed sensitivities: log10 of total Omega and of the additive output-noise power."""
        omega = self.omega(layout)
        total_omega = sum(omega[name][width] for name, width in bits.items())
        noise = sum(10.0 ** (-self.sqnr[name][width] / 10.0) for name, width in bits.items())
        return {"log_hawq_omega": math.log10(total_omega + 1e-12), "log_sqnr_noise": math.log10(noise + 1e-12)}


def _calibration_noise(model: Denoiser, samples: int):
    """x_T and the condition (labels of a class-conditional model) of the calibration noise set, on the model's device."""
    x_T, labels = noise_set(model, samples, CALIBRATION_SEED)
    return x_T.to(model.device), labels.to(model.device) if labels is not None and model.num_classes else None


def calibration_inputs(model: Denoiser, schedule: Schedule, samples: int, guidance: float | None = None):
    """Each model evaluation's (x_t, t) of the full-precision sampler from calibration noise, the labels and the final samples."""
    x_T, cond = _calibration_noise(model, samples)
    inputs = [(x_T, float(schedule.timesteps[0]))] if schedule.first_step == "model" else []
    with torch.no_grad():
        final = sample(model, schedule, x_T, cond, guidance, callback=lambda i, t, x, x0: inputs.append((x, float(t))))
    return inputs, cond, final


def calibrate(model: Denoiser, schedule: Schedule, samples: int = CALIBRATION_SAMPLES, guidance: float | None = None) -> dict[str, tuple[float, float]]:
    """Time-aware calibration: each layer's input (min, max) over the sampler's visited timesteps (Q-Diffusion)."""
    quantizer = _quantizer(model)
    x_T, cond = _calibration_noise(model, samples)
    with torch.no_grad(), quantizer.observe() as ranges:
        sample(model, schedule, x_T, cond, guidance)
    return {name: (float(low), float(high)) for name, (low, high) in ranges.items()}


def quantized_input_layers(model: Denoiser) -> tuple[str, ...]:
    """The layers whose inputs calibration quantises (all but those fed the network input), from one call on one zero sample."""
    quantizer = _quantizer(model)
    x = torch.zeros((1, *model.data_shape), device=model.device)
    cond = torch.zeros(1, dtype=torch.long, device=model.device) if model.num_classes else None
    nfe = model.nfe
    with torch.no_grad(), quantizer.observe() as ranges:
        model.network(x, float(model.noise_schedule.t_max) / 2, cond)
    model.nfe = nfe
    return tuple(name for name in quantizer.layout.names if name in ranges)


def layer_sqnr(model: Denoiser, inputs, cond, bitwidths=BITWIDTHS) -> dict[str, dict[int, float]]:
    """MixDQ-style sensitivity: SQNR (dB) of the output over all visited timesteps, one layer quantised at a time."""
    from diffsearch.models.bits import BitsConfig

    def outputs(config):
        with torch.no_grad():
            return torch.cat([model.network(x, t, cond, config=config) for x, t in inputs])

    reference = outputs(None)
    signal = float(reference.double().pow(2).sum())
    result: dict[str, dict[int, float]] = {}
    for name in _quantizer(model).layout.names:
        result[name] = {}
        for bits in bitwidths:
            noise = float((outputs(BitsConfig(weights={name: bits})) - reference).double().pow(2).sum())
            result[name][bits] = 10.0 * math.log10(signal / max(noise, 1e-30))
    return result


def hessian_traces(model: Denoiser, x0: torch.Tensor, cond, times: list[float], probes: int = HUTCHINSON_PROBES) -> dict[str, float]:
    """HAWQ-V2: Tr(H_l) = E_v[v^T H_l v] (Rademacher v, Hutchinson) of the epsilon-MSE at the visited times, one HVP per probe."""
    quantizer = _quantizer(model)
    names = quantizer.layout.names
    weights = {name: quantizer.module.get_submodule(name).weight.detach().clone().requires_grad_(True) for name in names}
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)  # the noise of the loss: calibration noise too
    noises = [torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype) for _ in times]
    with quantizer.override(weights):
        loss = sum(_denoising_loss(model, x0, noise, t, cond) for noise, t in zip(noises, times)) / len(times)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True)
    traces = dict.fromkeys(names, 0.0)
    for _ in range(probes):
        vs = [torch.randint(0, 2, w.shape, generator=generator).to(w.device, w.dtype) * 2 - 1 for w in weights.values()]
        hvs = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), list(weights.values()), retain_graph=True)
        for name, v, hv in zip(names, vs, hvs):
            traces[name] += float((v * hv).sum()) / probes
    return traces


def _denoising_loss(model: Denoiser, x0: torch.Tensor, noise: torch.Tensor, t: float, cond) -> torch.Tensor:
    """||eps_theta(alpha_t x0 + sigma_t eps, t) - eps||^2, averaged (Ho et al. 2020's simple loss)."""
    alpha, sigma = float(model.noise_schedule.alpha(t)), float(model.noise_schedule.sigma(t))
    x_t = (alpha * x0 + sigma * noise).requires_grad_(True)
    eps, _ = model.predict(x_t, t, cond)
    return (eps - noise).pow(2).mean()


def layer_statistics(model: Denoiser, schedule: Schedule, *, samples: int = CALIBRATION_SAMPLES,
                     sensitivity_samples: int = SENSITIVITY_SAMPLES, probes: int = HUTCHINSON_PROBES) -> LayerStatistics:
    """Calibration ranges and sensitivities of ``model`` on ``schedule``, cached on disk per model weights."""
    settings = {"samples": samples, "sensitivity_samples": sensitivity_samples, "probes": probes, "noise_seed": CALIBRATION_SEED,
                "schedule": schedule_fingerprint(schedule), "version": STATISTICS_VERSION}
    path = _cache_path(model, settings)
    if path is not None and path.is_file():
        return LayerStatistics.model_validate_json(path.read_text())
    nfe = model.nfe
    try:
        statistics = _measure(model, schedule, settings)
    finally:
        model.nfe = nfe
    if path is not None:
        atomic_write_text(path, statistics.model_dump_json() + "\n")
    return statistics


def _measure(model: Denoiser, schedule: Schedule, settings: dict[str, Any]) -> LayerStatistics:
    ranges = calibrate(model, schedule, settings["samples"])
    inputs, cond, final = calibration_inputs(model, schedule, settings["sensitivity_samples"])
    quantizer = _quantizer(model)
    errors = {name: {bits: float((fake_quantize_weight(w, bits) - w).double().pow(2).sum()) for bits in BITWIDTHS}
              for name, w in ((n, quantizer.module.get_submodule(n).weight.detach()) for n in quantizer.layout.names)}
    traces = hessian_traces(model, final.detach(), cond, [t for _, t in inputs], settings["probes"])
    return LayerStatistics(ranges=ranges, sqnr=layer_sqnr(model, inputs, cond), hessian_trace=traces, weight_error=errors,
                           settings=settings)


def _cache_path(model: Denoiser, settings: dict[str, Any]):
    import hashlib

    from diffsearch.evaluators.image_metrics import cache_dir

    if not getattr(model, "fingerprint_is_content_hash", False):
        return None
    key = hashlib.sha256(json.dumps([model.fingerprint, settings], sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "quantization" / f"{model.name}-{key}.json"


def _quantizer(model: Denoiser):
    if model.quantizer is None:
        raise DiffsearchError(f"model {model.name!r} declares no quantisable layers (Denoiser(quantizer=...))")
    return model.quantizer


def ilp_allocation(layout: QuantizationLayout, omega: dict[str, dict[int, float]], *, max_mean_bits: float | None = None,
                   max_bytes: int | None = None, bitwidths=BITWIDTHS) -> dict[str, int]:
    """HAWQ-V3's integer program (scipy ``milp``): one bitwidth per layer minimising sum Omega_l(b) under the budget."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    names, choices = layout.names, list(bitwidths)
    count = len(names) * len(choices)
    cost = np.array([omega[name][bits] for name in names for bits in choices])
    one_each = np.kron(np.eye(len(names)), np.ones(len(choices)))
    constraints = [LinearConstraint(one_each, 1, 1)]
    if max_mean_bits is not None:
        weighted = np.array([layer.params * bits for layer in layout.layers for bits in choices], dtype=float)
        constraints.append(LinearConstraint(weighted[None], -np.inf, max_mean_bits * layout.total_weights))
    if max_bytes is not None:
        fixed = layout.weight_bytes(dict.fromkeys(names, 8)) - sum(math.ceil(layer.params * 8 / 8) for layer in layout.layers)
        sizes = np.array([math.ceil(layer.params * bits / 8) for layer in layout.layers for bits in choices], dtype=float)
        constraints.append(LinearConstraint(sizes[None], -np.inf, max_bytes - fixed))
    result = milp(cost, constraints=constraints, integrality=np.ones(count), bounds=Bounds(0, 1))
    if result.x is None:
        raise DiffsearchError(f"no bit allocation fits the budget ({result.message})")
    chosen = np.round(result.x).reshape(len(names), len(choices)).argmax(axis=1)
    return {name: choices[index] for name, index in zip(names, chosen)}
