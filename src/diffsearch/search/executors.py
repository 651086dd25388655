"""Executors: where a search's expensive evaluations run (``inline`` in the driver, or ``ray`` actors).

An executor takes candidates (plain JSON dicts) keyed by trial number and hands back result dicts
as they complete; only the driver writes the study. This is the only module of the search engine
that imports ``ray`` (lazily, inside the Ray executor), besides the Tune adapter ``ray_tune.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from diffsearch.errors import DiffsearchError
from diffsearch.registry import Registry
from diffsearch.search.records import DeadlineReached  # noqa: F401  (raised here; re-exported for the runner)

if TYPE_CHECKING:
    from diffsearch.search.config import RunConfig
    from diffsearch.search.records import Run
    from diffsearch.spaces.base import Candidate, SearchSpace

EXECUTORS: Registry[type["Executor"]] = Registry("executor")
RAY_MISSING = "the ray executor needs Ray: pip install 'diffsearch[ray]'"


class Executor(Protocol):
    """Evaluate up to ``slots`` candidates at once; results come back in completion order."""

    slots: int
    timeout: float  # seconds one evaluation may run before it is a failed result (math.inf: no limit)
    deadline: float  # time.monotonic() at which running evaluations stop as interrupted (--time; math.inf: none)

    def submit(self, key: int, candidate: Candidate, overrides: dict[str, Any] | None = None) -> None:
        """Start evaluating ``candidate`` under ``key`` (a trial number); ``overrides`` replace settings (proxies)."""

    def next_result(self) -> tuple[int, dict[str, Any]]:
        """Block until one submitted evaluation is done: (key, result dict)."""

    def close(self) -> None:
        """Release workers (idempotent)."""


def evaluation_settings(config: RunConfig, space: SearchSpace, metric: str, samples: int) -> dict[str, Any]:
    """Everything an evaluator needs besides the candidate, as JSON (travels to Ray actors and Tune trainables)."""
    return {"model": config.model, **config.space_settings(), "metric": metric, "samples": samples,
            "guidance": config.guidance, "reference": config.reference, "features": config.features, "cache": config.cache,
            "device": config.device}


class EvaluationTimeout(Exception):
    """An evaluation ran past the executor's timeout."""


INTERRUPTED = "stopped at the --time deadline; re-queued"


def interrupted() -> dict[str, Any]:
    """The result of an evaluation the ``--time`` deadline stopped: not a failure, its candidate is re-queued."""
    return {"status": "interrupted", "error": INTERRUPTED}


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise EvaluationTimeout in the block after ``seconds`` (SIGALRM; main thread only, else no limit)."""
    if not math.isfinite(seconds) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise EvaluationTimeout(f"the evaluation ran past its {seconds:.0f}s timeout (--eval-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def evaluate_candidate(model, space, candidate: Candidate, settings: dict[str, Any], cache=None, timeout: float = math.inf,
                       deadline: float = math.inf) -> dict[str, Any]:
    """Decode and evaluate one candidate's plan on the search noise; failures and timeouts become a failed result, and an
    evaluation still running at ``deadline`` (``time.monotonic()``, the ``--time`` limit) an interrupted one."""
    from diffsearch.evaluators.evaluate import evaluate
    from diffsearch.evaluators.noise import SEARCH_SEED

    left = deadline - time.monotonic()
    if left <= 0:
        return interrupted()
    try:
        with time_limit(min(timeout, left)):
            plan = space.plan(candidate)
            result = evaluate(model, plan, samples=settings["samples"], seed=SEARCH_SEED, guidance=settings["guidance"],
                              metrics=[settings["metric"]], reference=settings["reference"], features=settings.get("features"), cache=cache if settings.get("cache", True) else None)
            if "macs_ratio" in result:  # over the full network on the space's reference schedule
                result["macs_ratio"] = space.cost(candidate)["macs_ratio"]
    except EvaluationTimeout as error:
        result = interrupted() if left < timeout else {"status": "failed", "error": f"EvaluationTimeout: {error}"}
    except Exception as error:  # a broken or hung candidate is a failed trial, never a crashed search
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return result


def proxy_settings(samples: int, metric: str) -> dict[str, Any]:
    """Setting overrides of a cheap proxy evaluation: few samples, no guidance, no reference, no cache."""
    return {"samples": samples, "metric": metric, "guidance": None, "reference": None, "cache": False}


def evaluate_batch(executor: Executor, candidates: list[Candidate], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate ``candidates`` through ``executor`` (``slots`` at a time) with ``overrides``; results in order.

    Keys are negative, so they never collide with the trial numbers of evaluations in flight."""
    results: dict[int, dict[str, Any]] = {}
    waiting = list(enumerate(candidates))
    while waiting or len(results) < len(candidates):
        while waiting and executor.free_slots() > 0:
            index, candidate = waiting.pop(0)
            executor.submit(-1 - index, candidate, overrides)
        key, result = executor.next_result(only_negative=True)
        results[-1 - key] = result
    if any(result["status"] == "interrupted" for result in results.values()):
        raise DeadlineReached(INTERRUPTED)
    return [results[index] for index in range(len(candidates))]


@EXECUTORS.register("inline")
class InlineExecutor:
    """Evaluate in the driver process, one candidate at a time (the default)."""

    slots = 1

    def __init__(self, run: Run) -> None:
        self.run, self.settings, self.queue = run, evaluation_settings(run.config, run.space, run.metric, run.search_samples), deque()
        self.timeout = self.deadline = math.inf

    def free_slots(self) -> int:
        return 1 - len(self.queue)

    def submit(self, key: int, candidate: Candidate, overrides: dict[str, Any] | None = None) -> None:
        self.queue.append((key, candidate, overrides or {}))

    def next_result(self, only_negative: bool = False) -> tuple[int, dict[str, Any]]:
        """Evaluate the oldest submitted candidate now, under the SIGALRM time limit."""
        key, candidate, overrides = self.queue.popleft()
        return key, evaluate_candidate(self.run.model, self.run.space, candidate, {**self.settings, **overrides}, self.run.cache,
                                       self.timeout, self.deadline)

    def close(self) -> None:
        self.queue.clear()


class Evaluator:
    """The body of one evaluator actor: loads the model and space once, then evaluates candidates."""

    def __init__(self, settings: dict[str, Any]) -> None:
        import torch

        from diffsearch.evaluators.cache import cache_for
        from diffsearch.models.loading import load_model
        from diffsearch.spaces.base import build_space

        torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS", "1")))
        self.settings = settings
        self.model = load_model(settings["model"]).to(settings.get("device", "auto"))  # auto: the GPU Ray assigned, if any
        self.space = build_space(self.model, settings)
        self.cache = cache_for(self.model, settings["cache"])

    def evaluate(self, candidate: Candidate, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result dict of one candidate (never raises for a broken candidate)."""
        settings = {**self.settings, **(overrides or {})}
        return {**evaluate_candidate(self.model, self.space, candidate, settings, self.cache), "pid": os.getpid(),
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
        self.inflight: dict[Any, tuple[int, Any, Candidate, dict[str, Any], float]] = {}
        self.done: deque[tuple[int, dict[str, Any]]] = deque()  # results set aside while a proxy batch waited
        self.attempts: dict[int, int] = {}
        self.timeout = self.deadline = math.inf
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
            options = connect_options(self.address, self.slots)
            with loopback_only(options["address"] == "local"):
                ray.init(**options)
            self.owns_ray = True
        self._check_gpus()
        self.actor_class = ray.remote(Evaluator)
        self.idle = [self._new_actor() for _ in range(self.slots)]
        try:  # the first pool must come up: a model that cannot load on the workers is an error, not N failed trials
            ray.get([actor.ready.remote() for actor in self.idle])
        except dead_worker_errors() as error:
            self.close()
            cause = str(error).strip().splitlines()[-1].rstrip(")")  # the actor's own exception, last line of the traceback
            raise DiffsearchError(f"ray executor: an evaluator actor could not start: {cause}") from None

    def _check_gpus(self) -> None:
        """Refuse (instead of waiting forever for actors Ray cannot place) when the cluster has fewer GPUs than asked for."""
        needed, resources = self.slots * self.gpus, self.ray.cluster_resources()
        if needed > resources.get("GPU", 0):
            self.close()
            reported = ", ".join(f"{resources.get(key, 0):g} {key}" for key in ("CPU", "GPU"))
            raise DiffsearchError(f"ray executor: {self.slots} workers x {self.gpus:g} GPUs per worker need {needed:g} GPUs; "
                                  f"Ray reports {reported}; pass --gpus-per-worker 0 (or fewer --workers)")

    def warm_up(self) -> float:
        """Start Ray and every actor now (model loaded); seconds it took."""
        started = time.perf_counter()
        if self.ray is None:
            self._start()
        return time.perf_counter() - started

    def _new_actor(self):
        """A fresh evaluator actor: one CPU, ``gpus_per_worker`` GPUs, no automatic restarts."""
        return self.actor_class.options(num_cpus=1, num_gpus=self.gpus, max_restarts=0, max_task_retries=0).remote(self.settings)

    def _replacement(self):
        """A fresh actor for a dead or killed one, returned once its model is loaded: no timeout counts the load."""
        actor = self._new_actor()
        try:
            self.ray.get(actor.ready.remote())
        except dead_worker_errors() as error:
            cause = str(error).strip().splitlines()[-1].rstrip(")")
            raise DiffsearchError(f"ray executor: a replacement evaluator actor could not start: {cause}") from None
        return actor

    def free_slots(self) -> int:
        return self.slots - len(self.inflight)

    def submit(self, key: int, candidate: Candidate, overrides: dict[str, Any] | None = None) -> None:
        """Send ``candidate`` to an idle actor (starting Ray and the pool on first use)."""
        if self.ray is None:
            self._start()
        if not self.idle:
            raise RuntimeError("ray executor: submit() with every worker busy")
        actor = self.idle.pop()
        self.inflight[actor.evaluate.remote(candidate, overrides)] = (key, actor, candidate, overrides or {}, time.monotonic())

    def next_result(self, only_negative: bool = False) -> tuple[int, dict[str, Any]]:
        """The first finished evaluation (``only_negative``: of a proxy batch; others are set aside);
        an actor death is retried here, a timed-out evaluation's actor is replaced."""
        for index, (key, result) in enumerate(self.done):
            if not only_negative or key < 0:
                del self.done[index]
                return key, result
        while True:
            ref = self._wait()
            key, actor, candidate, overrides, started = self.inflight.pop(ref)
            outcome = self._outcome(ref, key, actor, candidate, overrides, started)
            if outcome is None:
                continue
            if only_negative and key >= 0:
                self.done.append((key, outcome))
                continue
            return key, outcome

    def _limit(self, started: float) -> float:
        """When an evaluation started at ``started`` is stopped: its timeout or the deadline, whichever is first."""
        return min(started + self.timeout, self.deadline)

    def _wait(self):
        """The next finished reference, or one whose evaluation ran past its timeout or the deadline (its actor killed)."""
        while True:
            first = min(self._limit(started) for *_, started in self.inflight.values())
            remaining = max(first - time.monotonic(), 0.05) if math.isfinite(first) else None
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=remaining)
            if ready:
                return ready[0]
            for ref, (*_, started) in self.inflight.items():
                if time.monotonic() >= self._limit(started):
                    return ref

    def _outcome(self, ref, key: int, actor, candidate: Candidate, overrides: dict[str, Any], started: float) -> dict[str, Any] | None:
        """The result of a finished (or stopped) reference; None when it was resubmitted."""
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:  # past the timeout (failed) or the deadline (interrupted): the actor is killed and replaced
            self.ray.kill(actor)
            at_deadline = self.deadline < started + self.timeout
            self.idle.append(self._new_actor() if at_deadline else self._replacement())  # the search is ending: no wait
            self.attempts.pop(key, None)
            if at_deadline:
                return interrupted()
            return {"status": "failed", "error": f"the evaluation ran past its {self.timeout:.0f}s timeout (--eval-timeout); its actor was replaced"}
        try:
            result = self.ray.get(ref)
        except dead_worker_errors() as error:
            return self._retry(key, actor, candidate, overrides, error)
        except Exception as error:  # e.g. a result that cannot be deserialised: fail, do not retry
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        self.idle.append(actor)
        return {**result, "retries": self.attempts.pop(key, 0)}

    def _retry(self, key: int, actor, candidate: Candidate, overrides: dict[str, Any], error: Exception) -> dict[str, Any] | None:
        """Replace the dead actor; resubmit the candidate, or give up after ``max_retries``."""
        self.ray.kill(actor)  # usually dead already; a lost result may leave it alive
        self.idle.append(self._replacement())
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] > self.max_retries:
            retries = self.attempts.pop(key) - 1
            message = f"evaluator died {retries + 1} times ({type(error).__name__}); not retried again"
            return {"status": "failed", "error": message, "retries": retries}
        self.submit(key, candidate, overrides)
        return None

    def close(self) -> None:
        """Kill the actors; shut Ray down if this executor started it."""
        if self.ray is None:
            return
        for actor in [*self.idle, *(entry[1] for entry in self.inflight.values())]:
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


LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's single-machine mode: its node address is 127.0.0.1


@contextlib.contextmanager
def loopback_only(enabled: bool = True):
    """Start an embedded Ray cluster on 127.0.0.1 only: Ray 2.60 rewrites a node address of 127.0.0.1 to the machine's
    address on Linux unless its single-machine (macOS/Windows) mode is on; its servers then bind the loopback address.
    The switch is an environment variable (inherited by the cluster's processes) and a constant read at import."""
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    previous, constant = os.environ.get(LOOPBACK_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:  # joining a cluster later in this process must use the real address again
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if previous is None:
            os.environ.pop(LOOPBACK_SWITCH, None)
        else:
            os.environ[LOOPBACK_SWITCH] = previous


def make_executor(run: Run) -> Executor:
    """The executor named by the run's config."""
    return EXECUTORS.get(run.config.executor)(run)
