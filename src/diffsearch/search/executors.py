"""Executors: where a search's expensive evaluations run (``inline`` in the driver, or ``ray`` actors).

An executor takes candidates (plain JSON dicts) keyed by trial number and hands back result dicts
as they complete; only the driver writes the study. This is the only module of the search engine
that imports ``ray`` (lazily, inside the Ray executor), besides the Tune adapter ``ray_tune.py``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from diffsearch.errors import DiffsearchError
from diffsearch.registry import Registry

if TYPE_CHECKING:
    from diffsearch.search.config import RunConfig
    from diffsearch.search.runner import Run
    from diffsearch.spaces.base import Candidate, SearchSpace

EXECUTORS: Registry[type["Executor"]] = Registry("executor")
RAY_MISSING = "the ray executor needs Ray: pip install 'diffsearch[ray]'"


class Executor(Protocol):
    """Evaluate up to ``slots`` candidates at once; results come back in completion order."""

    slots: int

    def submit(self, key: int, candidate: Candidate) -> None:
        """Start evaluating ``candidate`` under ``key`` (a trial number)."""

    def next_result(self) -> tuple[int, dict[str, Any]]:
        """Block until one submitted evaluation is done: (key, result dict)."""

    def close(self) -> None:
        """Release workers (idempotent)."""


def evaluation_settings(config: RunConfig, space: SearchSpace, metric: str, samples: int) -> dict[str, Any]:
    """Everything an evaluator needs besides the candidate, as JSON (travels to Ray actors and Tune trainables)."""
    return {"model": config.model, "space": config.space, "budget": config.budget,
            "space_options": dict(space.options), "metric": metric, "samples": samples,
            "guidance": config.guidance, "reference": config.reference, "features": config.features, "cache": config.cache,
            "device": config.device}


def evaluate_candidate(model, space, candidate: Candidate, settings: dict[str, Any], cache=None) -> dict[str, Any]:
    """Decode and evaluate one candidate on the search noise; failures become a failed result."""
    from diffsearch.evaluators.evaluate import evaluate
    from diffsearch.evaluators.noise import SEARCH_SEED

    try:
        schedule = space.decode(candidate)
        result = evaluate(model, schedule, samples=settings["samples"], seed=SEARCH_SEED, guidance=settings["guidance"],
                          metrics=[settings["metric"]], reference=settings["reference"], features=settings.get("features"), cache=cache)
    except Exception as error:  # a broken candidate is a failed trial, never a crashed search
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return result


@EXECUTORS.register("inline")
class InlineExecutor:
    """Evaluate in the driver process, one candidate at a time (the default)."""

    slots = 1

    def __init__(self, run: Run) -> None:
        self.run, self.settings, self.queue = run, evaluation_settings(run.config, run.space, run.metric, run.search_samples), deque()

    def submit(self, key: int, candidate: Candidate) -> None:
        self.queue.append((key, candidate))

    def next_result(self) -> tuple[int, dict[str, Any]]:
        key, candidate = self.queue.popleft()
        return key, evaluate_candidate(self.run.model, self.run.space, candidate, self.settings, self.run.cache)

    def close(self) -> None:
        self.queue.clear()


class Evaluator:
    """The body of one evaluator actor: loads the model and space once, then evaluates candidates."""

    def __init__(self, settings: dict[str, Any]) -> None:
        import torch

        from diffsearch.budget import parse_budget
        from diffsearch.evaluators.cache import cache_for
        from diffsearch.models.loading import load_model
        from diffsearch.spaces.base import SPACES

        torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS", "1")))
        self.settings = settings
        self.model = load_model(settings["model"]).to(settings.get("device", "auto"))  # auto: the GPU Ray assigned, if any
        self.space = SPACES.get(settings["space"])(self.model, parse_budget(settings["budget"]), **settings["space_options"])
        self.cache = cache_for(self.model, settings["cache"])

    def evaluate(self, candidate: Candidate) -> dict[str, Any]:
        """The result dict of one candidate (never raises for a broken candidate)."""
        return {**evaluate_candidate(self.model, self.space, candidate, self.settings, self.cache), "pid": os.getpid(),
                "device": self.model.device}

    def ready(self) -> int:
        """The actor's process id, once the model is loaded."""
        return os.getpid()


@EXECUTORS.register("ray")
class RayExecutor:
    """A pool of Ray evaluator actors (one model load each); dead actors are replaced and their
    evaluation retried up to ``max_retries`` times, after which the candidate is a failed result."""

    def __init__(self, run: Run) -> None:
        config = run.config
        self.slots, self.gpus, self.max_retries = config.workers, config.gpus_per_worker, config.max_retries
        self.address, self.settings = config.ray_address, evaluation_settings(config, run.space, run.metric, run.search_samples)
        self.idle: list[Any] = []
        self.inflight: dict[Any, tuple[int, Any, Candidate]] = {}
        self.attempts: dict[int, int] = {}
        self.owns_ray = False
        self.ray = None

    def _start(self) -> None:
        """Connect to (or start) Ray and create the actor pool."""
        try:
            import ray
        except ImportError:
            raise DiffsearchError(RAY_MISSING) from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(**connect_options(self.address, self.slots))
            self.owns_ray = True
        self.actor_class = ray.remote(Evaluator)
        self.idle = [self._new_actor() for _ in range(self.slots)]
        try:  # the first pool must come up: a model that cannot load on the workers is an error, not N failed trials
            ray.get([actor.ready.remote() for actor in self.idle])
        except dead_worker_errors() as error:
            self.close()
            cause = str(error).strip().splitlines()[-1].rstrip(")")  # the actor's own exception, last line of the traceback
            raise DiffsearchError(f"ray executor: an evaluator actor could not start: {cause}") from None

    def warm_up(self) -> float:
        """Start Ray and every actor now (model loaded); seconds it took."""
        started = time.perf_counter()
        if self.ray is None:
            self._start()
        return time.perf_counter() - started

    def _new_actor(self):
        """A fresh evaluator actor: one CPU, ``gpus_per_worker`` GPUs, no automatic restarts."""
        return self.actor_class.options(num_cpus=1, num_gpus=self.gpus, max_restarts=0, max_task_retries=0).remote(self.settings)

    def submit(self, key: int, candidate: Candidate) -> None:
        """Send ``candidate`` to an idle actor (starting Ray and the pool on first use)."""
        if self.ray is None:
            self._start()
        if not self.idle:
            raise RuntimeError("ray executor: submit() with every worker busy")
        actor = self.idle.pop()
        self.inflight[actor.evaluate.remote(candidate)] = (key, actor, candidate)

    def next_result(self) -> tuple[int, dict[str, Any]]:
        """The first finished evaluation; an actor death is retried here, not returned."""
        while True:
            [ref], _ = self.ray.wait(list(self.inflight), num_returns=1)
            key, actor, candidate = self.inflight.pop(ref)
            try:
                result = self.ray.get(ref)
            except dead_worker_errors() as error:
                outcome = self._retry(key, actor, candidate, error)
                if outcome is None:
                    continue
                return key, outcome
            except Exception as error:  # e.g. a result that cannot be deserialised: fail, do not retry
                result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            self.idle.append(actor)
            return key, {**result, "retries": self.attempts.pop(key, 0)}

    def _retry(self, key: int, actor, candidate: Candidate, error: Exception) -> dict[str, Any] | None:
        """Replace the dead actor; resubmit the candidate, or give up after ``max_retries``."""
        self.ray.kill(actor)  # usually dead already; a lost result may leave it alive
        self.idle.append(self._new_actor())
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] > self.max_retries:
            retries = self.attempts.pop(key) - 1
            message = f"evaluator died {retries + 1} times ({type(error).__name__}); not retried again"
            return {"status": "failed", "error": message, "retries": retries}
        self.submit(key, candidate)
        return None

    def close(self) -> None:
        """Kill the actors; shut Ray down if this executor started it."""
        if self.ray is None:
            return
        for actor in [*self.idle, *(actor for _, actor, _ in self.inflight.values())]:
            self.ray.kill(actor)
        self.idle, self.inflight = [], {}
        if self.owns_ray:
            self.ray.shutdown()
        self.ray = None


def dead_worker_errors() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the evaluation died with its worker (retry on a fresh actor)."""
    from ray import exceptions

    return (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError,
            exceptions.OutOfMemoryError, exceptions.NodeDiedError)


def connect_options(address: str | None, workers: int) -> dict[str, Any]:
    """``ray.init`` arguments: join ``address`` (or RAY_ADDRESS under ``ray job submit``), else an
    embedded local cluster with at least one CPU per worker."""
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address or os.environ.get("RAY_ADDRESS"):
        return {**options, "address": address}
    return {**options, "address": "local", "num_cpus": max(workers, os.cpu_count() or 1), "include_dashboard": False}


def make_executor(run: Run) -> Executor:
    """The executor named by the run's config."""
    return EXECUTORS.get(run.config.executor)(run)
