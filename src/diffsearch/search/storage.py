"""The Optuna adapter: one study per search (SQLite in runs/ by default, any Optuna storage URL, or
``journal:///path.log`` for Optuna's journal file storage), trial records, stale-trial recovery.
The only module that touches Optuna's study API."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError
from diffsearch.search.config import validate_study_name
from diffsearch.search.records import Record, StudyState

RUNS_DIR = Path("runs")


def default_storage(study_name: str) -> str:
    """``sqlite:///runs/<study>.db`` (its folder is created when the study is opened)."""
    return f"sqlite:///{RUNS_DIR / (study_name + '.db')}"


JOURNAL = "journal:///"


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for in-memory SQLite and server URLs)."""
    for prefix in ("sqlite:///", JOURNAL):
        if url.startswith(prefix) and url != "sqlite:///:memory:":
            return Path(url.removeprefix(prefix))
    return None


STORAGE_FORMS = "sqlite:///path.db, postgresql://USER@HOST:5432/DB or journal:///path.log"


def check_storage_url(url: str) -> None:
    """Raise one-line DiffsearchError unless ``url`` is a journal URL or an RDB URL whose driver is installed."""
    if url.startswith(JOURNAL):
        return
    from sqlalchemy.engine import make_url

    try:
        dialect = make_url(url).get_dialect()
    except Exception:  # unparsable, or an unknown database kind
        raise DiffsearchError(f"--storage {url}: not a storage URL; use {STORAGE_FORMS}") from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        extra = " (pip install 'diffsearch[postgres]')" if dialect.name == "postgresql" else ""
        raise DiffsearchError(f"--storage {url}: its database driver is not installed ({error}){extra}; "
                              f"URL forms that work here: {STORAGE_FORMS}") from None


def optuna_storage(url: str):
    """An Optuna storage for ``url``: ``journal:///file.log`` is Optuna's journal file storage
    (append-only, file-locked: several drivers on one shared file system), anything else an RDB URL."""
    if not url.startswith(JOURNAL):
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL)))


def check_storage(name: str, storage: str | None) -> None:
    """Pre-flight: the study name is safe and the folder of a file storage exists (or is created) and is writable."""
    from diffsearch.files import check_writable_folder

    validate_study_name(name)
    path = storage_file(storage or default_storage(name))
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DiffsearchError(f"--storage: cannot create the folder {path.parent} ({error.strerror})") from None
    check_writable_folder(path.parent, "--storage")
    if path.exists() and not path.is_file():
        raise DiffsearchError(f"--storage {path}: is not a file")


def _unreadable(url: str, error: Exception) -> DiffsearchError:
    """One line for a storage that cannot be opened: unreachable, corrupt or truncated."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DiffsearchError(f"--storage {url}: cannot read the study database ({type(error).__name__}: {detail[:200]}); "
                           "if the file is corrupt, restore it from a copy or move it aside to start over")


def open_study(name: str, storage: str | None, sampler, identity: dict[str, Any], objectives: int = 1):
    """Create or load the study (``objectives`` minimised values per trial); a loaded one must have been created by the same search config."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage(name)
    check_storage_url(url)
    check_storage(name, storage)
    try:
        study = optuna.create_study(study_name=name, storage=optuna_storage(url), sampler=sampler, directions=["minimize"] * objectives, load_if_exists=True)
        study.get_trials(deepcopy=False)  # reads every table: a corrupt file fails here, not mid-search
    except Exception as error:  # a bad URL, an unreachable database, a corrupt file
        raise _unreadable(url, error) from None
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", identity)
    elif stored != identity:
        different = sorted(key for key in set(stored) | set(identity) if stored.get(key) != identity.get(key))
        raise DiffsearchError(
            f"study {name!r} in {url} was created with a different config ({', '.join(different)} differ); "
            "pass --study NEW_NAME to start another study"
        )
    return study


def load_existing(name: str, storage: str | None):
    """An existing study (for show/export); a clear error if there is none."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    validate_study_name(name)
    url = storage or default_storage(name)
    check_storage_url(url)
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise DiffsearchError(f"no study {name!r}: {path} does not exist (see runs/)")
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(url))
        study.get_trials(deepcopy=False)
        return study
    except KeyError:
        raise DiffsearchError(f"no study {name!r} in {url}") from None
    except Exception as error:
        raise _unreadable(url, error) from None


LEASE_PREFIX, LEASE_TTL_S, HEARTBEAT_S = "lease:", 60.0, 10.0


def _alive(lease: dict[str, Any], now: float) -> bool:
    """A lease is live while its heartbeat is fresh; on this host, only while its process exists."""
    if not lease or lease.get("released") or now - float(lease.get("heartbeat", 0)) > LEASE_TTL_S:
        return False
    if lease.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lease["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """This driver's claim on a study: a heartbeat in the study's user attrs (as Optuna's RDB heartbeat),
    refreshed by a background thread; other drivers re-queue only trials whose driver's lease expired."""

    def __init__(self, study, join: bool = False) -> None:
        self.study, self.join = study, join
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def others(self) -> dict[str, dict[str, Any]]:
        """Live leases of other drivers: driver id -> lease."""
        now = time.time()
        return {key.removeprefix(LEASE_PREFIX): value for key, value in self.study.user_attrs.items()
                if key.startswith(LEASE_PREFIX) and key != LEASE_PREFIX + self.id and _alive(value, now)}

    def __enter__(self) -> Lease:
        others = self.others()
        if others and not self.join:
            holder, lease = next(iter(others.items()))
            raise DiffsearchError(f"study {self.study.study_name!r} is being run by driver {lease['host']} pid {lease['pid']} "
                                  f"(heartbeat {time.time() - lease['heartbeat']:.0f}s ago); wait for it, or pass --join to share the work")
        self._beat()
        self._thread = threading.Thread(target=self._heartbeats, name="diffsearch-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self, released: bool = False) -> None:
        self.study.set_user_attr(LEASE_PREFIX + self.id, {"host": socket.gethostname(), "pid": os.getpid(),
                                                          "heartbeat": time.time(), "released": released})

    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # a busy database: the next beat retries; the TTL is six beats
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._beat(released=True)
        except Exception:
            pass

    def alive(self, driver: str) -> bool:
        """True for this driver and for another whose lease is live."""
        return driver == self.id or driver in self.others()

    def stale(self, trial) -> bool:
        """True when ``trial`` (RUNNING) belongs to no live driver: this one, or one whose lease expired."""
        owner = trial.user_attrs.get("driver")
        return owner is None or owner == self.id or owner not in self.others()


def state_of(study, lease: Lease | None = None) -> StudyState:
    """The strategy's state in the study's user attrs; with a ``lease``, claims are claim-once across joined drivers."""
    claim = None if lease is None else (lambda key: claim_once(study, key, lease.id, lease.alive))
    return StudyState(lambda key: study.user_attrs.get(key), study.set_user_attr, claim)


def history(study) -> list[Record]:
    """Every trial that carries a candidate, oldest first (value None unless complete)."""
    import optuna

    records = []
    for trial in study.get_trials(deepcopy=False):
        candidate = trial.user_attrs.get("candidate")
        if candidate is None or trial.user_attrs.get("interrupted"):  # a killed attempt: its re-queued twin counts
            continue
        values = tuple(trial.values) if trial.state == optuna.trial.TrialState.COMPLETE else None
        records.append(Record(trial.number, candidate, values[0] if values else None, trial.user_attrs.get("fingerprint", ""),
                              trial.user_attrs.get("tags", {}), values))
    return records


def completed_value(study, fingerprint: str) -> tuple[int, list[float]] | None:
    """(trial number, objective values) of a completed evaluation of the same candidate, if any."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("fingerprint") == fingerprint and "duplicate_of" not in trial.user_attrs:
            return trial.number, list(trial.values)
    return None


def recover_stale(study, max_attempts: int = 2, lease: Lease | None = None) -> list[dict[str, Any]]:
    """Fail trials left RUNNING by a killed run (with a ``lease``: only those whose driver's lease expired); return
    the interrupted candidates not evaluated since, to run first.

    A candidate whose evaluation was killed ``max_attempts`` times is a failed trial instead (not re-queued)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    attempts: dict[str, int] = {}
    for trial in trials:  # runs killed on a candidate (a --time deadline's stop is not an attempt)
        if trial.user_attrs.get("interrupted") and trial.user_attrs.get("fingerprint") and not trial.user_attrs.get("deadline"):
            attempts[trial.user_attrs["fingerprint"]] = attempts.get(trial.user_attrs["fingerprint"], 0) + 1
    for trial in (t for t in trials if t.state == optuna.trial.TrialState.RUNNING and (lease is None or lease.stale(t))):
        fingerprint = trial.user_attrs.get("fingerprint")
        attempts[fingerprint] = attempts.get(fingerprint, 0) + 1
        _fail_stale(study, trial, attempts[fingerprint] if fingerprint else 0, max_attempts)
    return _requeue(study)


def _fail_stale(study, trial, attempts: int, max_attempts: int) -> None:
    """Mark one stale trial FAIL: ``interrupted`` (re-queued) or, past ``max_attempts``, a failed evaluation."""
    import optuna

    given_up = attempts >= max_attempts
    error = (f"the evaluation killed its process {attempts} times (--max-attempts {max_attempts}); not retried" if given_up
             else "interrupted (the run was killed); re-queued")
    study._storage.set_trial_user_attr(trial._trial_id, "error", error)
    study._storage.set_trial_user_attr(trial._trial_id, "attempts" if given_up else "interrupted", attempts if given_up else True)
    study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def mark_interrupted(study, trial, reason: str) -> None:
    """Fail a trial the ``--time`` deadline stopped as ``interrupted`` (re-queued on resume; not counted as an attempt)."""
    import optuna

    for key, value in (("interrupted", True), ("deadline", True), ("error", reason)):
        trial.set_user_attr(key, value)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _requeue(study) -> list[dict[str, Any]]:
    """Interrupted candidates (oldest first) with no later record: a kill between re-queue and record loses none."""
    recorded = {record.fingerprint for record in history(study)}
    pending, seen = [], set()
    for trial in study.get_trials(deepcopy=False):
        fingerprint = trial.user_attrs.get("fingerprint")
        if trial.user_attrs.get("interrupted") and fingerprint and fingerprint not in recorded | seen:
            seen.add(fingerprint)
            pending.append({"candidate": trial.user_attrs["candidate"], "tags": trial.user_attrs.get("tags", {})})
    return pending


def count_evaluations(study) -> dict[str, int]:
    """Expensive evaluations (completed, not duplicates), failures and duplicates."""
    import optuna

    counts = {"expensive": 0, "failed": 0, "duplicates": 0, "interrupted": 0}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            counts["duplicates" if "duplicate_of" in trial.user_attrs else "expensive"] += 1
        elif trial.state == optuna.trial.TrialState.FAIL:
            counts["interrupted" if trial.user_attrs.get("interrupted") else "failed"] += 1
    return counts


def json_safe(value: Any) -> Any:
    """A JSON-storable copy (user attrs must be JSON): non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return json.loads(json.dumps(value, default=str))


# Many reads of many studies (``search serve``): one storage object, reused.

def shared_storage(url: str):
    """One Optuna storage for ``url`` (an RDB engine with a 30 s SQLite lock wait, or the journal) to reuse."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(JOURNAL):
        return optuna_storage(url)
    engine = {"connect_args": {"timeout": 30}} if url.startswith("sqlite:") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as error:
        raise DiffsearchError(f"--storage {url}: cannot open ({type(error).__name__}: {error})") from None


def study_names(shared) -> list[str]:
    """Names of every study in a storage."""
    import optuna

    return sorted(optuna.study.get_all_study_names(shared))


def load_from(shared, name: str):
    """The study ``name`` of a shared storage; DiffsearchError if there is none."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=shared)
    except KeyError:
        raise DiffsearchError(f"no study {name!r}") from None


def trial_results(study) -> list[dict[str, Any]]:
    """Completed, non-duplicate trials: number, value, the evaluator's result and the trial's seconds."""
    import optuna

    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "duplicate_of" in trial.user_attrs:
            continue
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
        rows.append({"number": trial.number, "value": trial.values[0], "result": trial.user_attrs.get("result") or {},
                     "seconds": seconds, "label": (trial.user_attrs.get("tags") or {}).get("label")})
    return rows


# The final stage's held-out evaluations, stored one by one as they complete (a resume reuses them).

HELDOUT_PREFIX = "final:heldout:"


def heldout_key(spec: dict[str, Any]) -> str:
    """``final:heldout:<sha256>`` of one held-out evaluation's spec (candidate, seed, samples, metrics, version)."""
    import hashlib

    from diffsearch._version import __version__

    text = json.dumps({**spec, "version": str(__version__)}, sort_keys=True, default=str)
    return HELDOUT_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def remembered(study, key: str, compute) -> dict[str, Any]:
    """The result stored under ``key`` (marked ``restored``), else ``compute()``, stored when it is ``ok``."""
    stored = study.user_attrs.get(key)
    if isinstance(stored, dict) and stored.get("status") == "ok":
        return {**stored, "restored": True}
    result = compute()
    if result.get("status") == "ok":
        study.set_user_attr(key, json_safe(result))
    return result


# Claim-once: several joined drivers, one builder of each shared piece of work (an s3 stage).

_CLAIM_LOCK = threading.Lock()


def _insert_once(study, key: str, owner: str) -> str:
    """Write ``key = owner`` unless ``key`` exists (atomically across drivers); the holder of ``key`` afterwards."""
    import optuna

    backend = getattr(study._storage, "_backend", study._storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        _insert_row(backend, study._study_id, key, owner)
    elif isinstance(backend, optuna.storages.journal.JournalFileBackend):
        _insert_locked(study, backend, key, owner)
    else:  # in-memory storage: one process
        with _CLAIM_LOCK:
            if key not in study.user_attrs:
                study.set_user_attr(key, owner)
    return study.user_attrs[key]


def _insert_row(rdb, study_id: int, key: str, owner: str) -> None:
    """INSERT of a study user attr; the (study_id, key) unique constraint refuses every writer but the first."""
    from optuna.storages._rdb import models
    from sqlalchemy.exc import IntegrityError, OperationalError

    for wait in (0.1, 0.2, 0.5, 1, 2, 4, 8, 16, None):  # a locked SQLite file: retry for about 30 s
        session = rdb.scoped_session()
        try:
            session.add(models.StudyUserAttributeModel(study_id=study_id, key=key, value_json=json.dumps(owner)))
            session.commit()
            return
        except IntegrityError:
            session.rollback()
            return
        except OperationalError:
            session.rollback()
            if wait is None:
                raise
            time.sleep(wait)
        finally:
            session.close()


def _insert_locked(study, backend, key: str, owner: str) -> None:
    """Check-and-set under a lock file beside the journal (Optuna's own lock, on ``<log>.claims``)."""
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(backend._file_path + ".claims")
    while not lock.acquire():
        time.sleep(0.05)
    try:
        if key not in study.user_attrs:
            study.set_user_attr(key, owner)
    finally:
        lock.release()


def claim_once(study, key: str, owner: str, alive) -> bool:
    """True when ``owner`` holds ``key`` (it claimed it first); a holder that is not ``alive(holder)`` any more is
    superseded by a claim of ``key#2``, ``key#3``, ... so that work a dead driver claimed is not lost."""
    for attempt in range(1, 1000):
        holder = _insert_once(study, key if attempt == 1 else f"{key}#{attempt}", owner)
        if holder == owner:
            return True
        if alive(holder):
            return False
    raise RuntimeError(f"claim {key}: 1000 dead holders")
