"""The S³ ``solver_schedule`` space: timesteps (t_end included) plus every USF decision per step.

A candidate is a schedule as a plain dict (``timesteps``, ``steps``, ``first_step``). Every
operator ends in ``repair`` (orders capped by history, invalid derivative points re-derived,
no corrector on the last step) and keeps the NFE exactly at the budget.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from diffsearch.budget import Budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.schedule import NoiseScheduleRef, Schedule, compute_nfe
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace

PREDICTIONS = ("noise", "data")
SCALES = ("none", "bh1", "bh2", "linear")
CORRECTORS = ("none", "pseudo")
ORDERS, ORDER_PROBABILITIES = (1, 2, 3, 4), (0.2, 0.4, 0.3, 0.1)  # USF's released priors (s3_spec.md 3.5)
INITIAL_SPACINGS = ("logsnr", "time_uniform", "quadratic", "karras")


def nearest_points(count: int, start: int, available: int) -> list[int]:
    """The ``count`` most recent evaluated points other than ``start``."""
    return [p for p in range(-1, -available - 1, -1) if p != start][:count]


def _points_valid(points: list[int], k: int, start: int, available: int) -> bool:
    return len(points) >= k and len(set(points)) == len(points) and all(-available <= p <= -1 and p != start for p in points)


def repair_step(step: dict[str, Any], index: int, n_steps: int, final_zero: bool) -> dict[str, Any]:
    """Make one step valid for its place: start, order, derivative points, corrector."""
    available = index + 1
    start = step.get("start", -1)
    start = start if -available <= start <= -1 else -1
    order = 1 if index == n_steps - 1 and final_zero else max(1, min(step.get("order", 1), available, 4))
    derivatives = []
    for k in range(1, order):
        old = step.get("derivatives", [])
        spec = dict(old[k - 1]) if k - 1 < len(old) else {}
        points = list(spec.get("points", []))
        if not _points_valid(points, k, start, available):
            points = nearest_points(max(k, min(len(points), order - 1)) if points else order - 1, start, available)
        spec["points"] = points
        derivatives.append(spec)
    corrector = step.get("corrector")
    if corrector is not None and (index == n_steps - 1 or final_zero and index == n_steps - 1):
        corrector = None
    if corrector is not None:
        corrector_order = max(2, min(corrector.get("order", order + 1), available + 1, 4))
        points = nearest_points(corrector_order - 1, start - 1, available + 1)
        corrector = {"kind": corrector.get("kind", "pseudo"), "order": corrector_order,
                     "derivatives": [{"points": points} for _ in range(corrector_order - 1)]}
    return {"prediction": step.get("prediction", "data"), "order": order, "start": start,
            "derivatives": derivatives, "corrector": corrector}


def repair(candidate: Candidate) -> Candidate:
    """A valid candidate from a possibly inconsistent one (after structural edits)."""
    steps = candidate["steps"]
    final_zero = candidate["timesteps"][-1] == 0.0
    repaired = [repair_step(step, i, len(steps), final_zero) for i, step in enumerate(steps)]
    return {"timesteps": [float(t) for t in candidate["timesteps"]], "first_step": candidate.get("first_step", "model"), "steps": repaired}


@SPACES.register("solver_schedule")
class SolverScheduleSpace(SearchSpace):
    """Per-step USF decisions and timesteps at an exact NFE budget (S³)."""

    name = "solver_schedule"

    def __init__(self, model: Denoiser, budget: Budget, **options: Any) -> None:
        super().__init__(model, budget, **options)
        if budget.unit != "nfe":
            raise DiffsearchError(f"space solver_schedule takes an NFE budget like 10nfe, not {budget}")
        self.nfe = int(budget.value)
        if self.nfe < 2:
            raise DiffsearchError("space solver_schedule needs a budget of at least 2nfe")
        ns = model.noise_schedule
        self.ns = ns
        self.reference = NoiseScheduleRef(spec=ns.describe(), fingerprint=ns.fingerprint)
        self.t_start = float(ns.t_max)
        self.t_end_range = (float(ns.default_t_end), 3.0 * float(ns.default_t_end))
        self.lambda_start = float(ns.lambda_(self.t_start))
        self.max_steps = self.nfe + 1

    # -- candidates ---------------------------------------------------------------------------
    def initial(self) -> list[tuple[str, Candidate]]:
        """Every preset at this NFE on every continuous timestep family (logSNR, uniform, quadratic, Karras),
        and on the optimised spacings named in the ``anchor_spacings`` space option (none by default)."""
        return [
            (f"preset:{name}@{spacing}", schedule_to_candidate(preset_schedule(name, self.nfe, self.ns, spacing, model=self.model)))
            for spacing in INITIAL_SPACINGS + self.anchor_spacings() for name in PRESETS
        ]

    def from_schedule(self, schedule: Schedule) -> Candidate:
        return self.validate(schedule_to_candidate(schedule))

    def decode(self, candidate: Candidate) -> Schedule:
        return Schedule(noise_schedule=self.reference, timesteps=tuple(candidate["timesteps"]),
                        steps=tuple(candidate["steps"]), first_step=candidate.get("first_step", "model"))

    def sample(self, rng: np.random.Generator) -> Candidate:
        first_step = "zero_x0" if rng.random() < 0.25 else "model"
        n_steps = self.nfe + (first_step != "model")
        times = self._random_times(n_steps, rng)
        steps = [self._random_step(i, n_steps, rng) for i in range(n_steps)]
        return self._checked(repair({"timesteps": times, "first_step": first_step, "steps": steps}))

    def _random_times(self, n_steps: int, rng: np.random.Generator) -> list[float]:
        t_end = float(np.exp(rng.uniform(*np.log(self.t_end_range))))
        lambda_end = float(self.ns.lambda_(t_end))
        fractions = np.cumsum(rng.dirichlet(np.full(n_steps, 3.0)))[:-1]
        times = self.ns.inverse_lambda(self.lambda_start + fractions * (lambda_end - self.lambda_start))
        return [self.t_start, *map(float, times), t_end]

    def _random_step(self, index: int, n_steps: int, rng: np.random.Generator) -> dict[str, Any]:
        order = min(int(rng.choice(ORDERS, p=ORDER_PROBABILITIES)), index + 1)
        step: dict[str, Any] = {"prediction": str(rng.choice(PREDICTIONS)), "order": order, "start": -1}
        if order > 1:
            first_points = int(rng.choice([order - 1, 1, 2]))
            step["derivatives"] = [self._first_derivative(nearest_points(min(first_points, order - 1), -1, index + 1), rng)]
        if index < n_steps - 1 and rng.random() < 0.5:
            step["corrector"] = {"kind": "pseudo", "order": order + 1}
        return step

    @staticmethod
    def _first_derivative(points: list[int], rng: np.random.Generator) -> dict[str, Any]:
        scale = str(rng.choice(SCALES, p=(0.5, 0.1, 0.2, 0.2)))
        coefficient = float(rng.normal(0.0, 0.1)) if scale == "linear" else 0.0
        return {"points": points, "scale": scale, "coefficient": coefficient}

    def _checked(self, candidate: Candidate) -> Candidate:
        nfe = compute_nfe(self.decode(candidate).steps, candidate["first_step"])
        if nfe != self.nfe:
            raise AssertionError(f"operator broke the budget: {nfe} != {self.nfe}")
        return candidate

    # -- operators ----------------------------------------------------------------------------
    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """One of: move a timestep, change t_end, change one decision, move a step, toggle the AFS."""
        child = copy.deepcopy(candidate)
        operator = rng.choice(["time", "t_end", "decision", "move_step", "first_step"], p=(0.3, 0.1, 0.4, 0.15, 0.05))
        getattr(self, f"_mutate_{operator}")(child, rng)
        return self._checked(repair(child))

    def _mutate_time(self, child: Candidate, rng: np.random.Generator) -> None:
        times = child["timesteps"]
        if len(times) < 3:
            return self._mutate_t_end(child, rng)
        j = int(rng.integers(1, len(times) - 1))
        lambdas = self.ns.lambda_(np.asarray(times[j - 1 : j + 2]))
        low, high = lambdas[0], lambdas[2] if np.isfinite(lambdas[2]) else lambdas[1] + (lambdas[1] - lambdas[0])
        position = np.clip((lambdas[1] - low) / (high - low) + rng.normal(0.0, 0.15), 0.05, 0.95)
        times[j] = float(self.ns.inverse_lambda(low + position * (high - low)))

    def _mutate_t_end(self, child: Candidate, rng: np.random.Generator) -> None:
        if child["timesteps"][-1] == 0.0:
            return
        t_end = float(np.exp(rng.uniform(*np.log(self.t_end_range))))
        child["timesteps"][-1] = min(t_end, 0.5 * child["timesteps"][-2])

    def _mutate_decision(self, child: Candidate, rng: np.random.Generator) -> None:
        i = int(rng.integers(len(child["steps"])))
        step = child["steps"][i]
        field = rng.choice(["prediction", "order", "points", "scale", "coefficient", "corrector", "start"])
        if field == "prediction":
            step["prediction"] = "data" if step["prediction"] == "noise" else "noise"
        elif field == "order":
            step["order"] = int(rng.choice(ORDERS, p=ORDER_PROBABILITIES))
            step["derivatives"] = []
        elif field in ("points", "scale", "coefficient") and step["order"] > 1:
            first = step["derivatives"][0]
            if field == "points":
                first["points"] = nearest_points(int(rng.integers(1, step["order"])), step["start"], i + 1)
            elif field == "scale":
                step["derivatives"][0] = {**self._first_derivative(first["points"], rng)}
            else:
                first["scale"], first["coefficient"] = "linear", float(first.get("coefficient", 0.0) + rng.normal(0.0, 0.05))
        elif field == "corrector":
            step["corrector"] = None if step.get("corrector") else {"kind": "pseudo", "order": step["order"] + 1}
        elif field == "start":
            step["start"] = -1 if step.get("start", -1) != -1 else -2

    def _mutate_move_step(self, child: Candidate, rng: np.random.Generator) -> None:
        self._remove_step(child, rng)
        self._insert_step(child, rng)

    def _mutate_first_step(self, child: Candidate, rng: np.random.Generator) -> None:
        if child["first_step"] == "model":
            child["first_step"] = "zero_x0"
            self._insert_step(child, rng)
        else:
            child["first_step"] = "model"
            self._remove_step(child, rng)

    def _remove_step(self, child: Candidate, rng: np.random.Generator) -> None:
        if len(child["steps"]) < 2:
            return
        j = int(rng.integers(1, len(child["timesteps"]) - 1))
        del child["timesteps"][j]
        del child["steps"][j]

    def _insert_step(self, child: Candidate, rng: np.random.Generator) -> None:
        times = child["timesteps"]
        g = int(rng.integers(len(times) - 1))
        lambdas = self.ns.lambda_(np.asarray(times[g : g + 2]))
        if not np.isfinite(lambdas[1]):
            g, lambdas = max(g - 1, 0), self.ns.lambda_(np.asarray(times[max(g - 1, 0) : max(g - 1, 0) + 2]))
        new_time = float(self.ns.inverse_lambda(lambdas[0] + rng.uniform(0.25, 0.75) * (lambdas[1] - lambdas[0])))
        times.insert(g + 1, new_time)
        child["steps"].insert(g + 1, self._random_step(g + 1, len(child["steps"]) + 1, rng))

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        """Uniform per-step crossover of equal-length parents; timesteps and AFS from one parent."""
        if len(first["steps"]) != len(second["steps"]):
            return copy.deepcopy(first)
        base = copy.deepcopy(first if rng.random() < 0.5 else second)
        base["steps"] = [copy.deepcopy(a if rng.random() < 0.5 else b) for a, b in zip(first["steps"], second["steps"])]
        return self._checked(repair(base))

    # -- encodings ----------------------------------------------------------------------------
    def encode(self, candidate: Candidate) -> np.ndarray:
        """Per-step slots (logSNR, gaps, one-hot decisions) padded to nfe + 1, plus global features."""
        times = np.asarray(candidate["timesteps"], dtype=np.float64)
        lambdas = np.minimum(self.ns.lambda_(times), 20.0) / 10.0
        slots = np.zeros((self.max_steps, 16))
        for i, step in enumerate(candidate["steps"][: self.max_steps]):
            first = step["derivatives"][0] if step["derivatives"] else {"points": [], "scale": "none", "coefficient": 0.0}
            corrector = step.get("corrector") or {"kind": "none"}
            slots[i, :7] = [1.0, lambdas[i + 1], lambdas[i + 1] - lambdas[i], step["prediction"] == "data",
                            step["order"] / 4, -step.get("start", -1) / 3, len(first["points"]) / 3]
            slots[i, 7 + SCALES.index(first.get("scale", "none")) if first.get("scale", "none") in SCALES else 7] = 1.0
            slots[i, 11] = first.get("coefficient", 0.0)
            slots[i, 12 + ("none", "pseudo", "implicit").index(corrector["kind"])] = 1.0
            slots[i, 15] = (corrector.get("order", 0) or 0) / 4
        first_step = candidate.get("first_step", "model")
        extra = [first_step == "model", first_step == "zero_x0", first_step == "mean_x0", lambdas[-1], len(candidate["steps"]) / self.max_steps]
        return np.concatenate([slots.ravel(), np.asarray(extra, dtype=np.float64)])

    def distributions(self) -> dict[str, Any]:
        """Fixed parameter names for Optuna's samplers (steps beyond the used count are ignored)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        result: dict[str, Any] = {
            "first_step": CategoricalDistribution(["model", "zero_x0"]),
            "t_end": FloatDistribution(*self.t_end_range, log=True),
        }
        for i in range(self.max_steps):
            result[f"gap_{i}"] = FloatDistribution(0.05, 1.0)
            result[f"prediction_{i}"] = CategoricalDistribution(list(PREDICTIONS))
            result[f"order_{i}"] = IntDistribution(1, 3)
            result[f"points_{i}"] = IntDistribution(1, 2)
            result[f"scale_{i}"] = CategoricalDistribution(list(SCALES))
            result[f"coefficient_{i}"] = FloatDistribution(-0.3, 0.3)
            result[f"corrector_{i}"] = CategoricalDistribution(list(CORRECTORS))
        return result

    def from_params(self, params: dict[str, Any]) -> Candidate:
        first_step = params["first_step"]
        n_steps = self.nfe + (first_step != "model")
        gaps = np.asarray([params[f"gap_{i}"] for i in range(n_steps)])
        lambda_end = float(self.ns.lambda_(params["t_end"]))
        fractions = np.cumsum(gaps / gaps.sum())[:-1]
        interior = self.ns.inverse_lambda(self.lambda_start + fractions * (lambda_end - self.lambda_start))
        steps = []
        for i in range(n_steps):
            order = min(params[f"order_{i}"], i + 1)
            step: dict[str, Any] = {"prediction": params[f"prediction_{i}"], "order": order, "start": -1}
            if order > 1:
                scale = params[f"scale_{i}"]
                step["derivatives"] = [{"points": nearest_points(min(params[f"points_{i}"], order - 1), -1, i + 1), "scale": scale,
                                        "coefficient": params[f"coefficient_{i}"] if scale == "linear" else 0.0}]
            if params[f"corrector_{i}"] == "pseudo":
                step["corrector"] = {"kind": "pseudo", "order": order + 1}
            steps.append(step)
        times = [self.t_start, *map(float, interior), float(params["t_end"])]
        return self._checked(repair({"timesteps": times, "first_step": first_step, "steps": steps}))


def schedule_to_candidate(schedule: Schedule) -> Candidate:
    """The candidate dict of a schedule (timesteps, steps, first_step)."""
    data = schedule.model_dump(mode="json")
    return {"timesteps": data["timesteps"], "first_step": data["first_step"], "steps": data["steps"]}
