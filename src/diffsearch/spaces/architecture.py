"""Spaces that change the network: the mode of every named block at every model evaluation, under a MACs budget.

``architecture``: block modes (run / skip / reuse) per evaluation of one fixed preset schedule; space options
``nfe`` (default 10), ``solver`` and ``spacing`` (default ``unipc_bh2`` on ``quadratic``, the best preset at
5-10 NFE on digits and gmm in benchmarks/RESULTS.md). ``timesteps+architecture``: AutoDiffusion's unified space,
timesteps and per-step blocks, the number of steps free under the total MACs budget. ``solver_schedule+architecture``:
the S3 schedule and the blocks together. The budget ``60%macs`` bounds the MACs of the whole sampling run over those
of the full network on the reference schedule (``nfe`` evaluations of the preset). The initial population holds the
baselines at the budget: DeepCache (every cache interval and branch depth that fits), the same blocks skipped at
every step, and the full network on a shorter schedule.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from typing import Any

import numpy as np

from diffsearch.budget import Budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.blocks import BLOCK_MODES, BlocksConfig
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.plan import Plan
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.schedule import Schedule
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace

DEFAULT_NFE, DEFAULT_SOLVER, DEFAULT_SPACING = 10, "unipc_bh2", "quadratic"
Rows = list[list[str]]  # one row per model evaluation: the mode of each block, in the model's block order
MAX_SUBSET_BLOCKS = 6  # models with more blocks get single blocks and centred runs as uniform-skip baselines


def require_blocks(model: Denoiser, space: str) -> tuple[str, ...]:
    """The model's block names, or one clear error naming the space."""
    if model.blocks is None:
        raise DiffsearchError(f"space {space} needs a model with named blocks; model {model.name!r} declares none "
                              "(digits and diffusers UNets do)")
    return tuple(model.blocks.names)


def require_macs_budget(budget: Budget, space: str) -> float:
    """The budget as a fraction of the full network's MACs (``60%macs`` -> 0.6)."""
    if budget.unit != "%macs" or not 0 < budget.value <= 100:
        raise DiffsearchError(f"space {space} takes a MACs budget from 0 to 100%, e.g. 60%macs, not {budget}")
    return budget.value / 100.0


def params_rng(params: dict[str, Any]) -> np.random.Generator:
    """A generator seeded by the parameters themselves, so ``from_params`` is deterministic."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class BlockModes:
    """Per-evaluation block modes of one model under a MACs limit (MACs measured per configuration, ``evaluators.cost``).

    Args:
        model: a model with named blocks.
        limit: the most MACs (one sample, whole run) a candidate may cost.
    """

    def __init__(self, model: Denoiser, limit: float) -> None:
        self.model, self.limit, self.names = model, limit, tuple(model.blocks.names)
        self._row_macs: dict[Any, float] = {}

    def config(self, row: list[str]) -> BlocksConfig:
        return BlocksConfig(modes={name: mode for name, mode in zip(self.names, row) if mode != "run"})

    def network(self, rows: Rows) -> tuple[BlocksConfig, ...]:
        return tuple(self.config(row) for row in rows)

    def macs(self, rows: Rows) -> float:
        """Measured MACs of one sample over the evaluations ``rows`` describe."""
        return sum(self.row_macs(row) for row in rows)

    def row_macs(self, row: list[str]) -> float:
        """MACs of one evaluation in the modes of ``row``: the full network's plus each block's change in its mode,
        each measured once (``macs_per_call``); block costs add up (a block's mode changes only its own operations)."""
        deltas = self.deltas()
        return deltas["full"] + sum(deltas[(name, mode)] for name, mode in zip(self.names, row) if mode != "run")

    def deltas(self) -> dict[Any, float]:
        """The full network's MACs per call and, per (block, skip/reuse), the change from it."""
        from diffsearch.evaluators.cost import macs_per_call

        if not self._row_macs:
            full = macs_per_call(self.model)
            self._row_macs["full"] = full
            for name in self.names:
                for mode in ("skip", "reuse"):
                    self._row_macs[(name, mode)] = macs_per_call(self.model, BlocksConfig(modes={name: mode})) - full
        return self._row_macs

    def fits(self, rows: Rows) -> bool:
        return self.macs(rows) <= self.limit * (1 + 1e-9)

    @staticmethod
    def fix_reuse(rows: Rows, replacement: str) -> Rows:
        """Replace every ``reuse`` without an earlier evaluation that ran the block (Plan's rule)."""
        ran = [False] * (len(rows[0]) if rows else 0)
        for row in rows:
            for j, mode in enumerate(row):
                if mode == "reuse" and not ran[j]:
                    row[j] = replacement
                ran[j] = ran[j] or row[j] == "run"
        return rows

    def repair(self, rows: Rows, rng: np.random.Generator) -> Rows:
        """Valid reuses, then random running blocks reused (or skipped) until the run fits the limit."""
        rows = self.fix_reuse(copy.deepcopy(rows), "run")
        while not self.fits(rows):
            running = [(i, j) for i, row in enumerate(rows) for j, mode in enumerate(row) if mode == "run"]
            if not running:
                raise DiffsearchError(f"no block modes fit {self.limit:.4g} MACs")
            i, j = running[int(rng.integers(len(running)))]
            rows[i][j] = "reuse" if i > 0 and rng.random() < 0.5 else "skip"
            rows = self.fix_reuse(rows, "skip")
        return rows

    def random_rows(self, count: int, rng: np.random.Generator) -> Rows:
        """Each block of each evaluation active with a per-candidate probability, then repaired."""
        share = rng.uniform(0.0, 0.7)
        rows = [[str(rng.choice(["skip", "reuse"])) if rng.random() < share else "run" for _ in self.names] for _ in range(count)]
        return self.repair(rows, rng)

    def mutate(self, rows: Rows, rng: np.random.Generator) -> Rows:
        """One to three (evaluation, block) modes changed, then repaired."""
        rows = copy.deepcopy(rows)
        for _ in range(int(rng.integers(1, 4))):
            i, j = int(rng.integers(len(rows))), int(rng.integers(len(self.names)))
            rows[i][j] = str(rng.choice([mode for mode in BLOCK_MODES if mode != rows[i][j]]))
        return self.repair(rows, rng)

    def cross(self, first: Rows, second: Rows, rng: np.random.Generator) -> Rows:
        """Uniform crossover of whole evaluations (AutoDiffusion's position-wise crossover), then repaired."""
        return self.repair([list(a if rng.random() < 0.5 else b) for a, b in zip(first, second)], rng)

    def encode(self, rows: Rows, evaluations: int) -> np.ndarray:
        """One-hot modes per (evaluation, block), padded to ``evaluations`` rows, and the MACs share of the limit."""
        features = np.zeros((evaluations, len(self.names), len(BLOCK_MODES)))
        for i, row in enumerate(rows[:evaluations]):
            for j, mode in enumerate(row):
                features[i, j, BLOCK_MODES.index(mode)] = 1.0
        return np.concatenate([features.ravel(), [self.macs(rows) / self.limit if self.limit else 0.0]])

    def validate(self, rows: Any, count: int, space: str) -> None:
        """One-line errors for a malformed, invalid or over-budget ``rows`` of ``count`` evaluations."""
        if not isinstance(rows, list) or len(rows) != count or any(not isinstance(r, list) or len(r) != len(self.names) for r in rows):
            raise DiffsearchError(f"space {space}: modes must be {count} lists of {len(self.names)} modes ({', '.join(self.names)})")
        if any(mode not in BLOCK_MODES for row in rows for mode in row):
            raise DiffsearchError(f"space {space}: a block mode is one of {', '.join(BLOCK_MODES)}")
        if self.fix_reuse(copy.deepcopy(rows), "invalid") != rows:
            raise DiffsearchError(f"space {space}: a reuse needs an earlier evaluation that ran the block")
        if not self.fits(rows):
            raise DiffsearchError(f"space {space}: the plan costs {self.macs(rows):.4g} MACs, over the budget's {self.limit:.4g}")

    def centres(self) -> list[tuple[int, tuple[str, ...]]]:
        """DeepCache's branch depths: the innermost blocks of the U (execution order) from depth 1 down to the middle."""
        n = len(self.names)
        return [(depth, self.names[depth : n - depth]) for depth in range(1, (n + 1) // 2) if self.names[depth : n - depth]]

    def deepcache(self, count: int) -> list[tuple[str, Rows]]:
        """DeepCache (Ma et al. 2024): the full network every ``interval`` evaluations, the deep branch reused between."""
        result = []
        for depth, inner in self.centres():
            for interval in range(2, count + 1):
                rows = [["reuse" if i % interval and name in inner else "run" for name in self.names] for i in range(count)]
                if self.fits(rows):
                    result.append((f"deepcache:interval{interval}:depth{depth}", rows))
        return result

    def uniform_skips(self, count: int) -> list[tuple[str, Rows]]:
        """The same blocks skipped at every evaluation: each smallest set of blocks (no smaller one inside it fits)."""
        n = len(self.names)
        sets = [s for size in range(1, n + 1) for s in itertools.combinations(self.names, size)] if n <= MAX_SUBSET_BLOCKS \
            else [(name,) for name in self.names] + [inner for _, inner in self.centres()]
        fitting: list[tuple[str, ...]] = []
        for blocks in sets:
            if any(set(smaller) <= set(blocks) for smaller in fitting):
                continue
            rows = [["skip" if name in blocks else "run" for name in self.names] for _ in range(count)]
            if self.fits(rows):
                fitting.append(blocks)
        return [(f"skip:{'+'.join(blocks)}", [["skip" if name in blocks else "run" for name in self.names] for _ in range(count)])
                for blocks in fitting]

    def all_run(self, count: int) -> Rows:
        return [["run"] * len(self.names) for _ in range(count)]

    def cost(self, rows: Rows, reference_nfe: int) -> dict[str, float]:
        """``nfe``, ``macs`` (one sample's whole run) and ``macs_ratio`` (over the full network at ``reference_nfe``)."""
        macs = self.macs(rows)
        return {"nfe": float(len(rows)), "macs": macs, "macs_ratio": macs / (self.deltas()["full"] * reference_nfe)}


def reference_limit(model: Denoiser, fraction: float, nfe: int) -> float:
    """``fraction`` of the full network's MACs over ``nfe`` evaluations (one sample)."""
    from diffsearch.evaluators.cost import macs_per_call

    return fraction * macs_per_call(model) * nfe


class BlockSpace(SearchSpace):
    """What the block spaces share: the MACs budget over the reference schedule of ``nfe`` evaluations, and the costs."""

    budget_units = ("%macs",)
    example = {"model": "digits", "budget": "60%macs", "space_options": {"nfe": 4}}

    def _block_modes(self, model: Denoiser, budget: Budget, nfe: int, solver: str) -> BlockModes:
        """Check the model, budget, solver and NFE (one-line errors), and the block modes under the budget."""
        require_blocks(model, self.name)
        fraction = require_macs_budget(budget, self.name)
        PRESETS.get(solver)
        if not isinstance(nfe, int) or not 1 <= nfe <= 100:
            raise DiffsearchError(f"space {self.name}: space option nfe {nfe!r} must be a whole number from 1 to 100")
        blocks = BlockModes(model, reference_limit(model, fraction, nfe))
        skipped = blocks.macs([["skip"] * len(blocks.names)] * nfe)
        if skipped > blocks.limit:
            raise DiffsearchError(f"--budget {budget}: even every block skipped at every step costs "
                                  f"{100 * skipped / (blocks.limit / fraction):.3g}%macs")
        return blocks

    def reference_nfe(self) -> int:
        return self.nfe

    def cost(self, candidate: Candidate) -> dict[str, float]:
        return self.blocks.cost(candidate["modes"], self.nfe)

    def shorter_nfe(self) -> int:
        """The most NFE of the full network within the budget (fewer NFE at equal MACs)."""
        return int(np.floor(self.blocks.limit / self.blocks.macs(self.blocks.all_run(1)) + 1e-9))


@SPACES.register("architecture")
class ArchitectureSpace(BlockSpace):
    """Per-evaluation block modes for one preset schedule (``nfe``, ``solver``, ``spacing`` options) under ``N%macs``.

    A candidate is ``{"nfe": k, "modes": [[mode per block] per evaluation]}``; ``k`` is the space's ``nfe`` except
    for the shorter full-network baseline (fewer NFE at the same MACs), which operators keep as it is.
    """

    name = "architecture"

    def __init__(self, model: Denoiser, budget: Budget, nfe: int = DEFAULT_NFE, solver: str = DEFAULT_SOLVER,
                 spacing: str = DEFAULT_SPACING, **options: Any) -> None:
        super().__init__(model, budget, nfe=nfe, solver=solver, spacing=spacing, **options)
        self.blocks = self._block_modes(model, budget, nfe, solver)
        self.nfe, self.solver, self.spacing, self.ns = nfe, solver, spacing, model.noise_schedule
        self._schedules: dict[int, Schedule] = {}

    def schedule(self, nfe: int) -> Schedule:
        if nfe not in self._schedules:
            self._schedules[nfe] = preset_schedule(self.solver, nfe, self.ns, self.spacing, model=self.model)
        return self._schedules[nfe]

    def initial(self) -> list[tuple[str, Candidate]]:
        rows = self.blocks.deepcache(self.nfe) + self.blocks.uniform_skips(self.nfe)
        result = [(label, {"nfe": self.nfe, "modes": modes}) for label, modes in rows]
        shorter = self.shorter_nfe()
        if 1 <= shorter < self.nfe:
            result.append((f"shorter:{self.solver}@{self.spacing}:{shorter}nfe", {"nfe": shorter, "modes": self.blocks.all_run(shorter)}))
        return result

    def decode(self, candidate: Candidate) -> Plan:
        return Plan(schedule=self.schedule(int(candidate["nfe"])), network=self.blocks.network(candidate["modes"]))

    def sample(self, rng: np.random.Generator) -> Candidate:
        return {"nfe": self.nfe, "modes": self.blocks.random_rows(self.nfe, rng)}

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        return {"nfe": candidate["nfe"], "modes": self.blocks.mutate(candidate["modes"], rng)}

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        if first["nfe"] != second["nfe"]:
            return self.mutate(first, rng)
        return {"nfe": first["nfe"], "modes": self.blocks.cross(first["modes"], second["modes"], rng)}

    def encode(self, candidate: Candidate) -> np.ndarray:
        return np.concatenate([self.blocks.encode(candidate["modes"], self.nfe), [candidate["nfe"] / self.nfe]])

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {f"mode_{i}_{name}": CategoricalDistribution(list(BLOCK_MODES)) for i in range(self.nfe) for name in self.blocks.names}

    def from_params(self, params: dict[str, Any]) -> Candidate:
        rows = [[params[f"mode_{i}_{name}"] for name in self.blocks.names] for i in range(self.nfe)]
        return {"nfe": self.nfe, "modes": self.blocks.repair(rows, params_rng(params))}

    def validate(self, candidate: Candidate) -> Candidate:
        if not isinstance(candidate, dict) or set(candidate) != {"nfe", "modes"}:
            raise DiffsearchError(f"space {self.name}: a candidate has the keys nfe and modes")
        if not isinstance(candidate["nfe"], int) or not 1 <= candidate["nfe"] <= self.nfe:
            raise DiffsearchError(f"space {self.name}: nfe must be a whole number from 1 to {self.nfe}")
        self.blocks.validate(candidate["modes"], candidate["nfe"], self.name)
        return copy.deepcopy(candidate)


class JointArchitectureSpace(BlockSpace):
    """A schedule space (``inner``, one per NFE) and per-evaluation block modes together, under a MACs budget.

    A candidate is ``{"nfe": k, "schedule": <inner candidate at k NFE>, "modes": [...]}``; ``k`` runs from
    ``min_nfe`` to ``max_nfe`` (space options; default half and twice the reference ``nfe``, capped by the budget),
    so pruning blocks buys more steps (AutoDiffusion's unified space).
    """

    inner = ""

    def __init__(self, model: Denoiser, budget: Budget, nfe: int = DEFAULT_NFE, solver: str = DEFAULT_SOLVER,
                 spacing: str = DEFAULT_SPACING, min_nfe: int | None = None, max_nfe: int | None = None, **options: Any) -> None:
        super().__init__(model, budget, nfe=nfe, solver=solver, spacing=spacing, min_nfe=min_nfe, max_nfe=max_nfe, **options)
        self.blocks = self._block_modes(model, budget, nfe, solver)
        self.nfe, self.solver, self.spacing, self.inner_options = nfe, solver, spacing, options
        skipped = self.blocks.macs([["skip"] * len(self.blocks.names)])
        self.max_nfe = int(max_nfe or min(2 * nfe, np.floor(self.blocks.limit / skipped + 1e-9)))
        self.min_nfe = int(min_nfe or max(1, nfe // 2))
        if not 1 <= self.min_nfe <= self.max_nfe:
            raise DiffsearchError(f"space {self.name}: no number of steps from {self.min_nfe} to {self.max_nfe} fits --budget {budget}")
        self._inner: dict[int, SearchSpace] = {}

    def inner_space(self, nfe: int) -> SearchSpace:
        """The schedule space at ``nfe`` NFE (built once)."""
        if nfe not in self._inner:
            options = {**self.inner_options, **({"solver": self.solver} if SPACES.get(self.inner).takes_solver else {})}
            self._inner[nfe] = SPACES.get(self.inner)(self.model, Budget(value=nfe, unit="nfe"), **options)
        return self._inner[nfe]

    def preset(self, nfe: int) -> tuple[str, Candidate]:
        """The inner space's preset of ``solver`` on ``spacing`` at ``nfe`` (else its first preset)."""
        presets = self.inner_space(nfe).initial()
        wanted = f"preset:{self.solver}@{self.spacing}"
        return next(((label, c) for label, c in presets if label == wanted), presets[0])

    def initial(self) -> list[tuple[str, Candidate]]:
        label, schedule = self.preset(self.nfe)
        rows = self.blocks.deepcache(self.nfe) + self.blocks.uniform_skips(self.nfe)
        result = [(f"{name}|{label}", {"nfe": self.nfe, "schedule": schedule, "modes": modes}) for name, modes in rows]
        shorter = self.shorter_nfe()
        if self.min_nfe <= shorter < self.nfe:
            label, schedule = self.preset(shorter)
            result.append((f"shorter:{label.removeprefix('preset:')}:{shorter}nfe", {"nfe": shorter, "schedule": schedule,
                                                                                   "modes": self.blocks.all_run(shorter)}))
        return result

    def decode(self, candidate: Candidate) -> Plan:
        plan = self.inner_space(int(candidate["nfe"])).plan(candidate["schedule"])
        return Plan(schedule=plan.schedule, network=self.blocks.network(candidate["modes"]))

    def sample(self, rng: np.random.Generator) -> Candidate:
        nfe = int(rng.integers(self.min_nfe, self.max_nfe + 1))
        return {"nfe": nfe, "schedule": self.inner_space(nfe).sample(rng), "modes": self.blocks.random_rows(nfe, rng)}

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """One of: one more or one fewer step (the preset there, mutated; modes extended or cut), the schedule, the modes."""
        nfe, operator = candidate["nfe"], rng.choice(["steps", "schedule", "modes"], p=(0.2, 0.3, 0.5))
        if operator == "steps":
            target = int(np.clip(nfe + rng.choice([-1, 1]), self.min_nfe, self.max_nfe))
            if target != nfe:
                rows = (copy.deepcopy(candidate["modes"]) + self.blocks.all_run(target))[:target]
                schedule = self.inner_space(target).mutate(self.preset(target)[1], rng)
                return {"nfe": target, "schedule": schedule, "modes": self.blocks.repair(rows, rng)}
        if operator == "schedule":
            return {**candidate, "schedule": self.inner_space(nfe).mutate(candidate["schedule"], rng)}
        return {**candidate, "modes": self.blocks.mutate(candidate["modes"], rng)}

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        if first["nfe"] != second["nfe"]:
            return self.mutate(first, rng)
        schedule = self.inner_space(first["nfe"]).crossover(first["schedule"], second["schedule"], rng)
        return {"nfe": first["nfe"], "schedule": schedule, "modes": self.blocks.cross(first["modes"], second["modes"], rng)}

    def encode(self, candidate: Candidate) -> np.ndarray:
        """The inner space's encoding padded to its length at ``max_nfe``, the modes, and k over the reference NFE."""
        schedule = self.inner_space(candidate["nfe"]).encode(candidate["schedule"])
        padded = np.zeros(self._schedule_length())
        padded[: len(schedule)] = schedule[: len(padded)]
        return np.concatenate([padded, self.blocks.encode(candidate["modes"], self.max_nfe), [candidate["nfe"] / self.nfe]])

    def _schedule_length(self) -> int:
        if "_length" not in self.__dict__:
            space = self.inner_space(self.max_nfe)
            self._length = len(space.encode(space.initial()[0][1]))
        return self._length

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, IntDistribution

        result = {"nfe": IntDistribution(self.min_nfe, self.max_nfe), **self.inner_space(self.max_nfe).distributions()}
        result.update({f"mode_{i}_{name}": CategoricalDistribution(list(BLOCK_MODES)) for i in range(self.max_nfe) for name in self.blocks.names})
        return result

    def from_params(self, params: dict[str, Any]) -> Candidate:
        nfe = int(params["nfe"])
        rows = [[params[f"mode_{i}_{name}"] for name in self.blocks.names] for i in range(nfe)]
        return {"nfe": nfe, "schedule": self.inner_space(nfe).from_params(params), "modes": self.blocks.repair(rows, params_rng(params))}

    def validate(self, candidate: Candidate) -> Candidate:
        if not isinstance(candidate, dict) or set(candidate) != {"nfe", "schedule", "modes"}:
            raise DiffsearchError(f"space {self.name}: a candidate has the keys nfe, schedule and modes")
        if not isinstance(candidate["nfe"], int) or not self.min_nfe <= candidate["nfe"] <= self.max_nfe:
            raise DiffsearchError(f"space {self.name}: nfe must be a whole number from {self.min_nfe} to {self.max_nfe}")
        self.inner_space(candidate["nfe"]).validate(candidate["schedule"])
        self.blocks.validate(candidate["modes"], candidate["nfe"], self.name)
        return copy.deepcopy(candidate)


@SPACES.register("timesteps+architecture")
class TimestepsArchitectureSpace(JointArchitectureSpace):
    """AutoDiffusion's unified space: the timesteps of ``solver`` and the blocks of every step, steps free under the MACs budget."""

    name = "timesteps+architecture"
    inner = "timesteps"


@SPACES.register("solver_schedule+architecture")
class SolverScheduleArchitectureSpace(JointArchitectureSpace):
    """The S3 schedule (every per-step decision) and the blocks of every evaluation, under the MACs budget."""

    name = "solver_schedule+architecture"
    inner = "solver_schedule"
