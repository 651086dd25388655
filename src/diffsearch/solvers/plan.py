"""The sampling plan: a solver schedule plus one network configuration per model evaluation.

A candidate that changes the network (skipped or reused blocks, once-for-all sub-networks; later bitwidths)
is a ``Plan``. Its ``network`` holds one ``NetworkConfig`` per model evaluation, counted as NFE
counts them (an analytical first step costs none, an implicit corrector one); an empty ``network``
is the full network at every evaluation. The ``fingerprint`` covers both parts, so two plans on one
schedule never share a cache entry, and a full-network plan's is its schedule's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from diffsearch.errors import DiffsearchError
from diffsearch.models.blocks import BlocksConfig, NetworkConfig
from diffsearch.models.subnet import SubnetConfig
from diffsearch.solvers.schedule import Schedule

PLAN_SCHEMA_VERSION = "diffsearch.plan/v1"


class Plan(BaseModel):
    """A ``diffsearch.plan/v1`` sampling plan.

    Example:
        >>> import diffsearch
        >>> gmm = diffsearch.load_model("gmm")
        >>> schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=gmm)
        >>> plan = Plan(schedule=schedule, network=(BlocksConfig(), BlocksConfig(modes={"mid": "reuse"})))
        >>> plan.nfe, plan.full_network, Plan(schedule=schedule).fingerprint == schedule_fingerprint(schedule)
        (2, False, True)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal["diffsearch.plan/v1"] = PLAN_SCHEMA_VERSION
    #: the solver schedule (timesteps and per-step decisions).
    schedule: Schedule
    #: one configuration per model evaluation (``schedule.nfe`` of them), or none: the full network.
    network: tuple[NetworkConfig, ...] = ()
    #: free-form results and provenance of the search that produced the plan.
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Plan:
        if self.network and len(self.network) != self.schedule.nfe:
            raise ValueError(f"network: {len(self.network)} configurations for a schedule of {self.schedule.nfe} NFE (give {self.schedule.nfe}, or none for the full network)")
        _check_reuse(self.network)
        return self

    @property
    def nfe(self) -> int:
        return int(self.schedule.nfe)

    @property
    def full_network(self) -> bool:
        """True when every evaluation runs the whole network."""
        return all(isinstance(config, BlocksConfig) and not config.active() for config in self.network)

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) over the schedule and the canonical network configurations."""
        if self.full_network:
            return schedule_fingerprint(self.schedule)
        network = [{"kind": c.kind, "modes": c.active()} if isinstance(c, BlocksConfig)
                   else c.model_dump(mode="json") if isinstance(c, SubnetConfig) else {"kind": c.kind, **c.active()}
                   for c in self.network]
        payload = {"schedule": _schedule_payload(self.schedule), "network": network}
        return _digest(payload)

    def evaluation_configs(self) -> tuple[NetworkConfig | None, ...]:
        """The configuration of each model evaluation; ``None`` everywhere for the full network."""
        return (None,) * self.nfe if self.full_network else tuple(self.network)

    def block_names(self) -> set[str]:
        """Every block named by a non-``run`` mode."""
        return {name for config in self.network if isinstance(config, BlocksConfig) for name in config.active()}

    def subnets(self) -> list[SubnetConfig]:
        """The distinct sub-networks the plan runs, in order of first use."""
        return list(dict.fromkeys(config for config in self.network if isinstance(config, SubnetConfig)))


def schedule_fingerprint(schedule: Schedule) -> str:
    """sha256 (16 hex) of a schedule's decisions (name, metrics and provenance excluded)."""
    return _digest({"schedule": _schedule_payload(schedule)})


def _schedule_payload(schedule: Schedule) -> dict[str, Any]:
    return schedule.model_dump(mode="json", exclude={"name", "metrics", "provenance"})


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_reuse(network: tuple[BlocksConfig, ...]) -> None:
    """A ``reuse`` needs an earlier evaluation that ran the block (omitted blocks run; skips do not)."""
    modes = [config.active() if isinstance(config, BlocksConfig) else {} for config in network]
    for index, active in enumerate(modes):
        for name, mode in active.items():
            if mode == "reuse" and all(name in earlier for earlier in modes[:index]):
                raise ValueError(f"network[{index}].modes.{name}: reuse needs an earlier evaluation that ran block {name!r}")


def as_plan(source: Plan | Schedule) -> Plan:
    """A Plan from a Plan or a Schedule (the full network)."""
    if isinstance(source, Plan):
        return source
    if isinstance(source, Schedule):
        return Plan(schedule=source)
    raise DiffsearchError(f"expected a Plan or a Schedule, got {type(source).__name__}")


def check_subnets(plan: Plan, model: Any) -> None:
    """Refuse a plan with sub-networks for a model that is no supernet, or outside its space."""
    subnets = plan.subnets()
    if subnets and model.elastic is None:
        raise DiffsearchError(f"model {model.name!r} is not a supernet; a plan with sub-networks cannot run on it")
    for config in subnets:
        model.elastic.space.check(config)


def check_blocks(plan: Plan, names: tuple[str, ...] | None, model_name: str) -> None:
    """Refuse a plan with block modes for a model without blocks, or with blocks it does not have."""
    wanted = plan.block_names()
    if not wanted:
        return
    if names is None:
        raise DiffsearchError(f"model {model_name!r} declares no blocks; a plan with block modes cannot run on it")
    unknown = sorted(wanted - set(names))
    if unknown:
        raise DiffsearchError(f"plan names block(s) {', '.join(unknown)} that model {model_name!r} lacks; it has {', '.join(names)}")
