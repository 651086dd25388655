"""Once-for-all spaces: sub-networks of a supernet under a MACs budget, per run or per evaluation.

``supernet``: one sub-network for the whole run on a fixed preset schedule (``nfe``, ``solver``,
``spacing`` space options). ``supernet_per_step``: one sub-network per model evaluation (a small
network for the noisy early steps, a larger one late, as T-Stitch does with two models).
``solver_schedule+supernet``: the S³ schedule and a sub-network per evaluation, jointly. The budget
``--budget 50%macs`` bounds the run's MACs by that share of the largest network's on the same
number of evaluations; every operator ends in ``repair``, which shrinks one gene at a time (OFA's
rejection of over-budget samples, made constructive) until the plan is at or under it. Genes and
operators are OFA's evolution finder's: per-stage depth, width and kernel, each mutated with
probability 0.1, uniform crossover. Candidates are JSON: ``{"subnet": {...}}``,
``{"subnets": [...]}`` or a solver_schedule candidate plus ``"subnets"``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from diffsearch.budget import Budget, MAX_NFE
from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.subnet import SubnetConfig
from diffsearch.solvers.plan import Plan
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace, candidate_problem
from diffsearch.spaces.solver_schedule import SolverScheduleSpace

DIMENSIONS = ("depth", "width", "kernel")
MUTATION_PROBABILITY = 0.1  # OFA's evolution finder: each gene changes with probability 0.1


class _SupernetGenes(SearchSpace):
    """Shared machinery: sub-network genes, the MACs budget, repair, encoding and Optuna parameters."""

    budget_units = ("%macs",)
    takes_solver = True  # --solver is the fixed schedule's solver
    example = {"model": "digits_ofa", "budget": "50%macs", "space_options": {"nfe": 4}}
    per_step = True

    def __init__(self, model: Denoiser, budget: Budget, nfe: int = 10, solver: str = "dpmpp_2m", spacing: str = "logsnr",
                 seconds: bool = False, **options: Any) -> None:
        super().__init__(model, budget, **options)
        from diffsearch.evaluators.cost import stage_macs

        if model.elastic is None:
            raise DiffsearchError(f"space {self.name} needs a supernet model (e.g. --model digits_ofa); {model.name!r} is not one")
        if not isinstance(nfe, int) or not 1 <= nfe <= MAX_NFE:
            raise DiffsearchError(f"space {self.name}: space option nfe must be a whole number from 1 to {MAX_NFE}, not {nfe!r}")
        PRESETS.get(solver)
        self.elastic, self.nfe, self.solver, self.spacing = model.elastic.space, nfe, solver, spacing
        self.limit, self.macs = budget.value / 100.0, stage_macs(model)
        smallest = self.macs(self.elastic.smallest()) / self.macs.largest
        if smallest > self.limit:
            raise DiffsearchError(f"--budget {budget}: the smallest sub-network costs {100 * smallest:.1f}% of the largest's MACs; give at least that")
        self.genes = [(s, d) for s in range(len(self.elastic.stages)) for d in DIMENSIONS if len(self.elastic.choices(d, s)) > 1]
        self.slots = nfe if self.per_step else 1
        self.latency = None
        if seconds:  # space option seconds: true adds the latency table's seconds per sample to cost()
            from diffsearch.evaluators.latency import latency_table

            self.latency = latency_table(model)

    # -- genes ----------------------------------------------------------------------------------
    def subnets(self, candidate: Candidate) -> list[SubnetConfig]:
        """The candidate's sub-networks (one, or one per evaluation), checked against the supernet."""
        raw = candidate["subnets"] if self.per_step else [candidate["subnet"]]
        if len(raw) != self.slots:
            raise DiffsearchError(f"space {self.name}: {len(raw)} sub-networks for {self.slots} evaluations")
        return [self.elastic.check(SubnetConfig.model_validate(item)) for item in raw]

    def with_subnets(self, candidate: Candidate, subnets: list[SubnetConfig]) -> Candidate:
        genes = [s.model_dump(mode="json", exclude={"kind"}) for s in subnets]
        return {**candidate, "subnets": genes} if self.per_step else {**candidate, "subnet": genes[0]}

    def ratio(self, subnets: list[SubnetConfig]) -> float:
        """The run's MACs over the largest network's at the same evaluations."""
        return sum(self.macs(s) for s in subnets) / (len(subnets) * self.macs.largest)

    def repair(self, subnets: list[SubnetConfig], rng: np.random.Generator) -> list[SubnetConfig]:
        """Shrink one random gene by one notch until the plan is at or under the budget."""
        subnets = list(subnets)
        while self.ratio(subnets) > self.limit + 1e-12:
            options = [(i, s, d) for i, net in enumerate(subnets) for s, d in self.genes
                       if getattr(net, d)[s] > min(self.elastic.choices(d, s))]
            i, s, d = options[int(rng.integers(len(options)))]
            choices = sorted(self.elastic.choices(d, s))
            subnets[i] = subnets[i].replace(s, d, choices[choices.index(getattr(subnets[i], d)[s]) - 1])
        return subnets

    def mutate_subnets(self, subnets: list[SubnetConfig], rng: np.random.Generator) -> list[SubnetConfig]:
        """OFA's mutation (each gene resampled with probability 0.1, at least one), of one evaluation's
        sub-network; per step, sometimes a copy of a neighbouring evaluation's instead."""
        subnets, i = list(subnets), int(rng.integers(len(subnets)))
        if len(subnets) > 1 and rng.random() < 0.2:
            subnets[i] = subnets[i - 1 if i > 0 else 1]
            return self.repair(subnets, rng)
        genes = [g for g in self.genes if rng.random() < MUTATION_PROBABILITY] or [self.genes[int(rng.integers(len(self.genes)))]]
        for s, d in genes:
            choices = self.elastic.choices(d, s)
            subnets[i] = subnets[i].replace(s, d, choices[int(rng.integers(len(choices)))])
        return self.repair(subnets, rng)

    def crossover_subnets(self, first: list[SubnetConfig], second: list[SubnetConfig], rng: np.random.Generator) -> list[SubnetConfig]:
        """Uniform crossover gene by gene (OFA), then repair."""
        children = []
        for a, b in zip(first, second):
            child = a
            for s, d in self.genes:
                if rng.random() < 0.5:
                    child = child.replace(s, d, getattr(b, d)[s])
            children.append(child)
        return self.repair(children, rng)

    def random_subnets(self, rng: np.random.Generator) -> list[SubnetConfig]:
        return self.repair([self.elastic.random(rng) for _ in range(self.slots)], rng)

    def uniform_at_budget(self) -> list[SubnetConfig]:
        """Every uniformly scaled sub-network within the budget, largest MACs first."""
        fitting = [u for u in self.elastic.uniform() if self.ratio([u]) <= self.limit + 1e-12]
        return sorted(fitting, key=lambda u: -self.macs(u))

    def encode_subnets(self, subnets: list[SubnetConfig]) -> np.ndarray:
        """OFA's one-hot encoding, per evaluation (a K x block one-hot when per step)."""
        return np.concatenate([self.elastic.encode(s) for s in subnets])

    def subnet_distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {self._param(i, s, d): CategoricalDistribution(list(self.elastic.choices(d, s)))
                for i in range(self.slots) for s, d in self.genes}

    def subnets_from_params(self, params: dict[str, Any]) -> list[SubnetConfig]:
        subnets = []
        for i in range(self.slots):
            net = self.elastic.largest()
            for s, d in self.genes:
                net = net.replace(s, d, params[self._param(i, s, d)])
            subnets.append(net)
        return self.repair(subnets, np.random.default_rng(0))

    def _param(self, i: int, stage: int, dimension: str) -> str:
        prefix = f"e{i}_" if self.per_step else ""
        return f"{prefix}{self.elastic.stages[stage]}_{dimension}"

    # -- contract ---------------------------------------------------------------------------------
    def cost(self, candidate: Candidate) -> dict[str, float]:
        """``nfe``, ``macs`` (one sample's whole run, from the measured per-stage table), ``macs_ratio`` and, with
        the space option ``seconds``, ``seconds`` (per sample, from the latency look-up table on the model's device)."""
        subnets = self.subnets(candidate)
        repeat = self.nfe // len(subnets)
        cost = {"nfe": float(self.nfe), "macs": float(sum(self.macs(s) for s in subnets) * repeat), "macs_ratio": self.ratio(subnets)}
        if self.latency is not None:
            cost["seconds"] = float(sum(self.latency.seconds(s) for s in subnets) * repeat)
        return cost

    def reference_nfe(self) -> int:
        return self.nfe

    def validate(self, candidate: Candidate) -> Candidate:
        """The candidate decodes, runs ``nfe`` evaluations and costs at most the budget's share of MACs."""
        try:
            plan = self.decode(candidate)
        except DiffsearchError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise DiffsearchError(f"space {self.name}: invalid candidate ({candidate_problem(error)})") from None
        if plan.nfe != self.nfe:
            raise DiffsearchError(f"space {self.name}: candidate costs {plan.nfe} NFE; the space runs {self.nfe}")
        ratio = self.ratio(self.subnets(candidate))
        if ratio > self.limit + 1e-12:
            raise DiffsearchError(f"space {self.name}: candidate costs {100 * ratio:.1f}% of the largest network's MACs; the budget is {self.budget}")
        return copy.deepcopy(candidate)

    def _plan(self, schedule, subnets: list[SubnetConfig]) -> Plan:
        return Plan(schedule=schedule, network=tuple(subnets) * (self.nfe // len(subnets)))


class _FixedSchedule(_SupernetGenes):
    """Sub-networks on one preset schedule (``solver`` at ``nfe`` on ``spacing``)."""

    def __init__(self, model: Denoiser, budget: Budget, **options: Any) -> None:
        super().__init__(model, budget, **options)
        self.schedule = preset_schedule(self.solver, self.nfe, model.noise_schedule, self.spacing, model=model)

    def initial(self) -> list[tuple[str, Candidate]]:
        """Every uniformly scaled sub-network within the budget, on the preset schedule."""
        return [(f"preset:{self.solver}@{self.spacing}+{u.label()}", self.with_subnets({}, [u] * self.slots))
                for u in self.uniform_at_budget()]

    def decode(self, candidate: Candidate) -> Plan:
        return self._plan(self.schedule, self.subnets(candidate))

    def sample(self, rng: np.random.Generator) -> Candidate:
        return self.with_subnets({}, self.random_subnets(rng))

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        return self.with_subnets({}, self.mutate_subnets(self.subnets(candidate), rng))

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        return self.with_subnets({}, self.crossover_subnets(self.subnets(first), self.subnets(second), rng))

    def encode(self, candidate: Candidate) -> np.ndarray:
        return self.encode_subnets(self.subnets(candidate))

    def distributions(self) -> dict[str, Any]:
        return self.subnet_distributions()

    def from_params(self, params: dict[str, Any]) -> Candidate:
        return self.with_subnets({}, self.subnets_from_params(params))


@SPACES.register("supernet")
class SupernetSpace(_FixedSchedule):
    """One sub-network of the supernet for the whole run, under a MACs budget."""

    name = "supernet"
    per_step = False


@SPACES.register("supernet_per_step")
class SupernetPerStepSpace(_FixedSchedule):
    """One sub-network per model evaluation, under a MACs budget for the whole run."""

    name = "supernet_per_step"


@SPACES.register("solver_schedule+supernet")
class SolverScheduleSupernetSpace(_SupernetGenes):
    """The S³ solver schedule jointly with one sub-network per evaluation, under a MACs budget."""

    name = "solver_schedule+supernet"

    def __init__(self, model: Denoiser, budget: Budget, **options: Any) -> None:
        super().__init__(model, budget, **options)
        self.schedules = SolverScheduleSpace(model, Budget(value=self.nfe, unit="nfe"))

    @staticmethod
    def _schedule_part(candidate: Candidate) -> Candidate:
        return {key: value for key, value in candidate.items() if key != "subnets"}

    def initial(self) -> list[tuple[str, Candidate]]:
        """Every schedule preset with the largest uniform sub-network within the budget, and the space's
        preset (``solver`` on ``spacing``) with every uniform one."""
        uniform = self.uniform_at_budget()
        presets = dict(self.schedules.initial())
        own = presets.pop(f"preset:{self.solver}@{self.spacing}", None)
        pairs = [(f"{label}+{uniform[0].label()}", self.with_subnets(c, [uniform[0]] * self.slots)) for label, c in presets.items()]
        if own is not None:
            pairs += [(f"preset:{self.solver}@{self.spacing}+{u.label()}", self.with_subnets(own, [u] * self.slots)) for u in uniform]
        return pairs

    def decode(self, candidate: Candidate) -> Plan:
        return self._plan(self.schedules.decode(self._schedule_part(candidate)), self.subnets(candidate))

    def sample(self, rng: np.random.Generator) -> Candidate:
        return self.with_subnets(self.schedules.sample(rng), self.random_subnets(rng))

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """Half the time the schedule (solver_schedule's mutations), else the sub-networks."""
        if rng.random() < 0.5:
            return self.with_subnets(self.schedules.mutate(self._schedule_part(candidate), rng), self.subnets(candidate))
        return self.with_subnets(self._schedule_part(candidate), self.mutate_subnets(self.subnets(candidate), rng))

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        schedule = self.schedules.crossover(self._schedule_part(first), self._schedule_part(second), rng)
        return self.with_subnets(schedule, self.crossover_subnets(self.subnets(first), self.subnets(second), rng))

    def encode(self, candidate: Candidate) -> np.ndarray:
        return np.concatenate([self.schedules.encode(self._schedule_part(candidate)), self.encode_subnets(self.subnets(candidate))])

    def distributions(self) -> dict[str, Any]:
        return {**self.schedules.distributions(), **self.subnet_distributions()}

    def from_params(self, params: dict[str, Any]) -> Candidate:
        schedule_params = {k: v for k, v in params.items() if k in self.schedules.distributions()}
        return self.with_subnets(self.schedules.from_params(schedule_params), self.subnets_from_params(params))
