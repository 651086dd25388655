"""The ``timesteps`` space: timesteps only, for a fixed solver preset (AutoDiffusion / Align Your Steps)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from diffsearch.budget import Budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.schedule import Schedule
from diffsearch.solvers.timesteps import DIFFUSERS_SPACINGS, TIMESTEP_FAMILIES
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace


@SPACES.register("timesteps")
class TimestepsSpace(SearchSpace):
    """NFE + 1 decreasing times (t_end included) for one preset solver (``--solver``)."""

    name = "timesteps"
    takes_solver = True
    example = {"model": "gmm", "budget": "6nfe", "space_options": {"solver": "unipc_bh2"}}

    def __init__(self, model: Denoiser, budget: Budget, solver: str = "dpmpp_2m", **options: Any) -> None:
        super().__init__(model, budget, **options)
        if budget.unit != "nfe":
            raise DiffsearchError(f"space timesteps takes an NFE budget like 10nfe, not {budget}")
        PRESETS.get(solver)
        self.solver, self.nfe, self.ns = solver, int(budget.value), model.noise_schedule
        self.t_start = float(self.ns.t_max)
        self.t_end_range = (float(self.ns.default_t_end), 3.0 * float(self.ns.default_t_end))
        self.lambda_start = float(self.ns.lambda_(self.t_start))

    def initial(self) -> list[tuple[str, Candidate]]:
        """The solver on every continuous spacing family and on the ``anchor_spacings`` space option's."""
        families = [name for name in TIMESTEP_FAMILIES if name not in DIFFUSERS_SPACINGS] + list(self.anchor_spacings())
        return [(f"preset:{self.solver}@{family}",
                 {"timesteps": list(preset_schedule(self.solver, self.nfe, self.ns, family, model=self.model).timesteps)})
                for family in families]

    def from_schedule(self, schedule: Schedule) -> Candidate:
        return self.validate({"timesteps": [float(t) for t in schedule.timesteps]})

    def decode(self, candidate: Candidate) -> Schedule:
        return preset_schedule(self.solver, self.nfe, self.ns, timesteps=candidate["timesteps"])

    def _from_fractions(self, fractions: np.ndarray, t_end: float) -> Candidate:
        lambda_end = float(self.ns.lambda_(t_end))
        interior = self.ns.inverse_lambda(self.lambda_start + fractions * (lambda_end - self.lambda_start))
        return {"timesteps": [self.t_start, *map(float, interior), float(t_end)]}

    def sample(self, rng: np.random.Generator) -> Candidate:
        t_end = float(np.exp(rng.uniform(*np.log(self.t_end_range))))
        return self._from_fractions(np.cumsum(rng.dirichlet(np.full(self.nfe, 3.0)))[:-1], t_end)

    def _fractions(self, candidate: Candidate) -> np.ndarray:
        lambdas = self.ns.lambda_(np.asarray(candidate["timesteps"]))
        return (lambdas[1:-1] - lambdas[0]) / (lambdas[-1] - lambdas[0])

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """Jitter one interior time in logSNR (keeping the order) or resample t_end."""
        fractions, t_end = self._fractions(candidate), candidate["timesteps"][-1]
        if len(fractions) == 0 or rng.random() < 0.15:
            t_end = float(np.exp(rng.uniform(*np.log(self.t_end_range))))
        else:
            j = int(rng.integers(len(fractions)))
            low = fractions[j - 1] if j > 0 else 0.0
            high = fractions[j + 1] if j + 1 < len(fractions) else 1.0
            position = np.clip((fractions[j] - low) / (high - low) + rng.normal(0.0, 0.15), 0.05, 0.95)
            fractions = fractions.copy()
            fractions[j] = low + position * (high - low)
        return self._from_fractions(fractions, t_end)

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        """The average of the parents in normalised logSNR (order is preserved)."""
        weight = rng.uniform(0.25, 0.75)
        fractions = weight * self._fractions(first) + (1 - weight) * self._fractions(second)
        return self._from_fractions(fractions, first["timesteps"][-1] if rng.random() < 0.5 else second["timesteps"][-1])

    def encode(self, candidate: Candidate) -> np.ndarray:
        lambdas = np.minimum(self.ns.lambda_(np.asarray(candidate["timesteps"])), 20.0) / 10.0
        return np.concatenate([lambdas, np.diff(lambdas)])

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        result: dict[str, Any] = {"t_end": FloatDistribution(*self.t_end_range, log=True)}
        result.update({f"gap_{i}": FloatDistribution(0.05, 1.0) for i in range(self.nfe)})
        return result

    def from_params(self, params: dict[str, Any]) -> Candidate:
        gaps = np.asarray([params[f"gap_{i}"] for i in range(self.nfe)])
        return self._from_fractions(np.cumsum(gaps / gaps.sum())[:-1], params["t_end"])

    def validate(self, candidate: Candidate) -> Candidate:
        if len(candidate.get("timesteps", [])) != self.nfe + 1:
            raise DiffsearchError(f"candidate needs {self.nfe + 1} timesteps for {self.budget}")
        return super().validate(copy.deepcopy(candidate))
