"""Mixed-precision spaces: the weight bitwidth of every quantisable layer (``bitwidth``), per step
bucket along the trajectory (``bitwidth_per_step``, PTQD's idea), under a mean-bits or weight-bytes budget.

A candidate is ``{"bits": [[b per layer] per bucket]}`` (layers in the order the model's quantizer
declares, b in 2, 3, 4, 6, 8). The schedule is fixed (``solver``, ``spacing``, ``nfe`` space
options; default the best digits preset, UniPC-bh2 on quadratic times at 10 NFE); evaluation k runs
bucket ``k * buckets // nfe``. Activations are 8 bits per tensor with ranges calibrated on that
schedule's visited timesteps. Budget accounting (nas_spec.md 3.1): mean bits per weight averaged
over the evaluations; weight bytes count every distinct (layer, bits) a candidate stores once.
Every candidate honours the budget (at or under it); operators repair by lowering one layer of one
bucket at a time, then fill the headroom by raising layers while the budget allows.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from typing import Any

import numpy as np

from diffsearch.budget import BYTES_PER_UNIT, Budget, weight_bytes_budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.bits import BITWIDTHS, BitsConfig, QuantizationLayout
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.plan import Plan
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.schedule import Schedule
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace

UNIFORM_BASELINES = (8, 6, 4)
TOLERANCE = 1e-9


class BitAllocation:
    """The budget arithmetic of per-bucket bit allocations on one layout (pure; shared by the bitwidth spaces)."""

    def __init__(self, layout: QuantizationLayout, budget: Budget, weights: list[float], ranges: int) -> None:
        self.layout, self.budget, self.weights, self.ranges = layout, budget, weights, ranges
        self.params = np.array([layer.params for layer in layout.layers], dtype=float)

    def mean_bits(self, bits: list[list[int]]) -> float:
        """Parameter-weighted mean bits per weight, averaged over the evaluations (bucket weights)."""
        return float(sum(w * (self.params @ np.asarray(b, dtype=float)) for w, b in zip(self.weights, bits)) / self.params.sum())

    def weight_bytes(self, bits: list[list[int]]) -> int:
        """Bytes to store every distinct (layer, bits) of the candidate (packed integers and scales), plus ranges and the rest."""
        return self.layout.stored_bytes({name: {row[i] for row in bits} for i, name in enumerate(self.layout.names)}, self.ranges)

    def fits(self, bits: list[list[int]]) -> bool:
        if self.budget.unit == "bits":
            return self.mean_bits(bits) <= self.budget.value + TOLERANCE
        return self.weight_bytes(bits) <= weight_bytes_budget(self.budget)

    def repair(self, bits: list[list[int]], rng: np.random.Generator, keep: tuple[int, int] | None = None) -> list[list[int]]:
        """Lower one random (bucket, layer) one level at a time until the budget holds (``keep`` last)."""
        bits = [list(row) for row in bits]
        while not self.fits(bits):
            lowerable = [(k, i) for k, row in enumerate(bits) for i, b in enumerate(row) if b > BITWIDTHS[0] and (k, i) != keep]
            if not lowerable:
                if keep is None or bits[keep[0]][keep[1]] == BITWIDTHS[0]:
                    raise DiffsearchError(f"even {BITWIDTHS[0]} bits everywhere exceeds the budget {self.budget}")
                lowerable = [keep]
            k, i = lowerable[int(rng.integers(len(lowerable)))]
            bits[k][i] = BITWIDTHS[BITWIDTHS.index(bits[k][i]) - 1]
        return bits

    def fill(self, bits: list[list[int]], rng: np.random.Generator, keep: tuple[int, int] | None = None) -> list[list[int]]:
        """One pass in random order raising each (bucket, layer) one level while the budget still holds."""
        bits = [list(row) for row in bits]
        slots = [(k, i) for k in range(len(bits)) for i in range(len(bits[0])) if (k, i) != keep]
        for index in rng.permutation(len(slots)):
            k, i = slots[int(index)]
            if bits[k][i] < BITWIDTHS[-1]:
                old = bits[k][i]
                bits[k][i] = BITWIDTHS[BITWIDTHS.index(old) + 1]
                if not self.fits(bits):
                    bits[k][i] = old
        return bits


@SPACES.register("bitwidth")
class BitwidthSpace(SearchSpace):
    """One weight bitwidth per quantisable layer (2-8 bits), 8-bit activations, under ``4.5bits`` or ``1.2MB``."""

    name = "bitwidth"
    budget_units = ("bits", "MB", "kB")
    #: the settings the shared space contract builds this space with (tiny statistics: a test, not a measurement).
    example: dict[str, Any] = {"model": "digits", "budget": "4bits",
                               "space_options": {"nfe": 4, "statistics": {"samples": 8, "sensitivity_samples": 2, "probes": 2}}}
    default_buckets = 1
    candidate_keys: tuple[str, ...] = ("bits",)

    def __init__(self, model: Denoiser, budget: Budget, solver: str = "unipc_bh2", spacing: str = "quadratic", nfe: int = 10,
                 buckets: int | None = None, statistics: dict[str, int] | None = None, **options: Any) -> None:
        super().__init__(model, budget, **options)
        if budget.unit not in self.budget_units:
            raise DiffsearchError(f"space {self.name} takes a bits or weight-bytes budget like 4.5bits or 1.2MB, not {budget}")
        if model.quantizer is None:
            raise DiffsearchError(f"space {self.name}: model {model.name!r} declares no quantisable layers")
        PRESETS.get(solver)
        self.buckets = buckets or self.default_buckets
        if not 1 <= self.buckets <= nfe:
            raise DiffsearchError(f"space {self.name}: buckets must be from 1 to the NFE ({nfe}), not {self.buckets}")
        self.layout: QuantizationLayout = model.quantizer.layout
        self.schedule: Schedule = preset_schedule(solver, int(nfe), model.noise_schedule, spacing, model=model)
        self.nfe = int(self.schedule.nfe)
        self.statistics_options = dict(statistics or {})
        counts = np.bincount([k * self.buckets // self.nfe for k in range(self.nfe)], minlength=self.buckets)
        from diffsearch.evaluators.quantization import quantized_input_layers

        self.allocation = BitAllocation(self.layout, budget, list(counts / self.nfe), len(quantized_input_layers(model)))
        self.allocation.repair([[BITWIDTHS[-1]] * len(self.layout.layers)] * self.buckets, np.random.default_rng(0))  # a budget below 2 bits fails here

    @cached_property
    def stats(self):
        """Calibration ranges and sensitivities on the space's schedule (measured once, cached on disk)."""
        from diffsearch.evaluators.quantization import layer_statistics

        return layer_statistics(self.model, self.schedule, **self.statistics_options)

    def _candidate(self, bits: list[list[int]]) -> Candidate:
        return {"bits": [[int(b) for b in row] for row in bits]}

    def _uniform(self, width: int) -> list[list[int]]:
        return [[width] * len(self.layout.layers) for _ in range(self.buckets)]

    def initial(self) -> list[tuple[str, Candidate]]:
        """Uniform 8 / 6 / 4 bits where they fit, then (while they fit) lower, and the HAWQ-V3 ILP allocation."""
        from diffsearch.evaluators.quantization import ilp_allocation

        fitting = [width for width in BITWIDTHS if self.allocation.fits(self._uniform(width))]
        uniform = [width for width in UNIFORM_BASELINES if width in fitting] or fitting[-1:]
        budget = {"max_mean_bits": self.budget.value} if self.budget.unit == "bits" else {"max_bytes": weight_bytes_budget(self.budget)}
        ilp = ilp_allocation(self.layout, self.stats.omega(self.layout), **budget)
        ilp_bits = [[ilp[name] for name in self.layout.names]] * self.buckets
        return [(f"preset:uniform{width}", self._candidate(self._uniform(width))) for width in uniform] + [
            ("preset:hawq_ilp", self._candidate(self.allocation.repair(ilp_bits, np.random.default_rng(0))))]

    def sample(self, rng: np.random.Generator) -> Candidate:
        bits = rng.choice(BITWIDTHS, size=(self.buckets, len(self.layout.layers))).tolist()
        return self._candidate(self.allocation.fill(self.allocation.repair(bits, rng), rng))

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """Set one (bucket, layer) to another bitwidth, then repair or fill the others around it."""
        bits = [list(row) for row in candidate["bits"]]
        k, i = int(rng.integers(self.buckets)), int(rng.integers(len(self.layout.layers)))
        bits[k][i] = int(rng.choice([b for b in BITWIDTHS if b != bits[k][i]]))
        return self._candidate(self.allocation.fill(self.allocation.repair(bits, rng, keep=(k, i)), rng, keep=(k, i)))

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        """Uniform crossover per (bucket, layer), repaired into the budget."""
        mask = rng.random((self.buckets, len(self.layout.layers))) < 0.5
        bits = np.where(mask, np.asarray(first["bits"]), np.asarray(second["bits"])).tolist()
        return self._candidate(self.allocation.fill(self.allocation.repair(bits, rng), rng))

    def encode(self, candidate: Candidate) -> np.ndarray:
        """log2(b) / 3 per (bucket, layer), mean bits / 8, and the summed HAWQ and SQNR sensitivities."""
        bits = candidate["bits"]
        stats = self.free_statistics(candidate)
        return np.concatenate([np.log2(np.asarray(bits, dtype=float)).ravel() / 3.0,
                               [self.allocation.mean_bits(bits) / 8.0, stats["log_hawq_omega"] / 10.0, stats["log_sqnr_noise"] / 10.0]])

    def free_statistics(self, candidate: Candidate) -> dict[str, float]:
        """Summed per-layer sensitivities of the candidate (averaged over its buckets)."""
        rows = [self.stats.free_statistics(self.layout, dict(zip(self.layout.names, row))) for row in candidate["bits"]]
        return {key: float(np.dot(self.allocation.weights, [row[key] for row in rows])) for key in rows[0]}

    def network_configs(self, candidate: Candidate, ranges: dict[str, tuple[float, float]] | None = None) -> tuple[BitsConfig, ...]:
        """One ``BitsConfig`` per model evaluation (the bucket's bits, the activation ranges calibrated on the schedule)."""
        ranges = self.stats.ranges if ranges is None else ranges
        configs = [BitsConfig(weights=dict(zip(self.layout.names, row)), activations=ranges) for row in candidate["bits"]]
        return tuple(configs[k * self.buckets // self.nfe] for k in range(self.nfe))

    def decode(self, candidate: Candidate) -> Plan:
        return Plan(schedule=self.schedule, network=self.network_configs(candidate))

    def cost(self, candidate: Candidate) -> dict[str, float]:
        """``nfe``, ``macs`` / ``macs_ratio`` (fake quantisation keeps every multiply-accumulate: the schedule's full
        network), mean ``bits`` per weight and packed ``weight_bytes``."""
        from diffsearch.evaluators.cost import plan_cost

        bits, schedule = candidate["bits"], self.plan(candidate).schedule
        measured = plan_cost(self.model, Plan(schedule=schedule), reference_nfe=self.nfe)
        return {"nfe": float(schedule.nfe), "macs": measured["macs_per_sample"], "macs_ratio": measured["macs_ratio"],
                "bits": self.allocation.mean_bits(bits), "weight_bytes": float(self.allocation.weight_bytes(bits))}

    def validate(self, candidate: Candidate) -> Candidate:
        bits = candidate.get("bits") if isinstance(candidate, dict) else None
        shape_ok = isinstance(bits, list) and len(bits) == self.buckets and all(isinstance(row, list) and len(row) == len(self.layout.layers) for row in bits)
        if not shape_ok or set(candidate) != set(self.candidate_keys):
            raise DiffsearchError(f"space {self.name}: a candidate is {{'bits': {self.buckets} lists of {len(self.layout.layers)} bitwidths}}")
        wrong = sorted({b for row in bits for b in row} - set(BITWIDTHS))
        if wrong:
            raise DiffsearchError(f"space {self.name}: bitwidths {wrong} are not among {', '.join(map(str, BITWIDTHS))}")
        if not self.allocation.fits(bits):
            cost = self.cost(candidate)
            spent = f"{cost['bits']:.4g} mean bits" if self.budget.unit == "bits" else f"{cost['weight_bytes'] / BYTES_PER_UNIT[self.budget.unit]:.4g}{self.budget.unit}"
            raise DiffsearchError(f"candidate costs {spent}; the budget is {self.budget}")
        return candidate

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {f"bits_{k}_{i}": CategoricalDistribution(list(BITWIDTHS)) for k in range(self.buckets) for i in range(len(self.layout.layers))}

    def from_params(self, params: dict[str, Any]) -> Candidate:
        """The assignment, repaired into the budget with a generator seeded by the assignment itself (deterministic)."""
        bits = [[int(params[f"bits_{k}_{i}"]) for i in range(len(self.layout.layers))] for k in range(self.buckets)]
        seed = int(hashlib.sha256(json.dumps(bits).encode()).hexdigest()[:8], 16)
        return self._candidate(self.allocation.repair(bits, np.random.default_rng(seed)))


@SPACES.register("bitwidth_per_step")
class BitwidthPerStepSpace(BitwidthSpace):
    """Per-layer bitwidths in ``buckets`` (default 2) groups of consecutive steps: early, noisy steps may take fewer bits."""

    name = "bitwidth_per_step"
    default_buckets = 2
    example: dict[str, Any] = {**BitwidthSpace.example, "budget": "200kB"}


@SPACES.register("solver_schedule+bitwidth")
class SolverScheduleBitwidthSpace(BitwidthSpace):
    """A solver schedule (S3's per-step decisions at ``nfe`` evaluations) and one bitwidth per layer, searched jointly.

    A candidate is ``{"schedule": <solver_schedule candidate>, "bits": [[b per layer]]}``. Activation ranges
    are calibrated on each candidate's own schedule (the timesteps it visits); sensitivities and the ILP
    baseline come from the base schedule (``solver``, ``spacing``). ``schedule_options`` go to the
    ``solver_schedule`` space.
    """

    name = "solver_schedule+bitwidth"
    candidate_keys = ("schedule", "bits")
    example: dict[str, Any] = {**BitwidthSpace.example, "budget": "3bits"}

    def __init__(self, model: Denoiser, budget: Budget, nfe: int = 10, schedule_options: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(model, budget, nfe=nfe, **options)
        self.schedules = SPACES.get("solver_schedule")(model, Budget(value=float(self.nfe), unit="nfe"), **(schedule_options or {}))
        self._ranges: dict[str, dict[str, tuple[float, float]]] = {}

    def _bits(self, candidate: Candidate) -> Candidate:
        return {"bits": candidate["bits"]}

    def initial(self) -> list[tuple[str, Candidate]]:
        """The bits baselines on the base schedule, then every schedule preset with the ILP allocation."""
        base = self.schedules.from_schedule(self.schedule)
        bits = BitwidthSpace.initial(self)
        ilp = bits[-1][1]["bits"]
        return [(label, {"schedule": base, "bits": c["bits"]}) for label, c in bits] + [
            (f"{label}+hawq_ilp", {"schedule": schedule, "bits": ilp}) for label, schedule in self.schedules.initial() if schedule != base]

    def sample(self, rng: np.random.Generator) -> Candidate:
        return {"schedule": self.schedules.sample(rng), "bits": super().sample(rng)["bits"]}

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """Mutate the schedule or the bits (even odds)."""
        if rng.random() < 0.5:
            return {"schedule": self.schedules.mutate(candidate["schedule"], rng), "bits": candidate["bits"]}
        return {"schedule": candidate["schedule"], "bits": super().mutate(self._bits(candidate), rng)["bits"]}

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        return {"schedule": self.schedules.crossover(first["schedule"], second["schedule"], rng),
                "bits": super().crossover(self._bits(first), self._bits(second), rng)["bits"]}

    def encode(self, candidate: Candidate) -> np.ndarray:
        return np.concatenate([self.schedules.encode(candidate["schedule"]), super().encode(self._bits(candidate))])

    def free_statistics(self, candidate: Candidate) -> dict[str, float]:
        return super().free_statistics(self._bits(candidate))

    def schedule_ranges(self, schedule: Schedule) -> dict[str, tuple[float, float]]:
        """Activation ranges calibrated on ``schedule`` (memoised); the base schedule's when it diverges."""
        from diffsearch.evaluators.quantization import calibrate
        from diffsearch.solvers.plan import schedule_fingerprint

        key = schedule_fingerprint(schedule)
        if key not in self._ranges:
            nfe = self.model.nfe
            ranges = calibrate(self.model, schedule, self.statistics_options.get("samples", 64))
            self.model.nfe = nfe
            finite = all(math.isfinite(low) and math.isfinite(high) for low, high in ranges.values())
            self._ranges[key] = ranges if finite else self.stats.ranges
        return self._ranges[key]

    def decode(self, candidate: Candidate) -> Plan:
        schedule = self.schedules.decode(candidate["schedule"])
        return Plan(schedule=schedule, network=self.network_configs(self._bits(candidate), self.schedule_ranges(schedule)))

    def validate(self, candidate: Candidate) -> Candidate:
        super().validate(candidate)
        self.schedules.validate(candidate["schedule"])
        return candidate

    def distributions(self) -> dict[str, Any]:
        return {**self.schedules.distributions(), **super().distributions()}

    def from_params(self, params: dict[str, Any]) -> Candidate:
        bits = {key: value for key, value in params.items() if key.startswith("bits_")}
        schedule = self.schedules.from_params({key: value for key, value in params.items() if key not in bits})
        return {"schedule": schedule, "bits": super().from_params(bits)["bits"]}
