"""The Optuna adapter: one study per search (SQLite in runs/ by default, any Optuna storage URL, or
``journal:///path.log`` for Optuna's journal file storage), trial records, stale-trial recovery.
The only module that touches Optuna's study API."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError
from diffsearch.search.strategies import Record, StudyState

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


def open_study(name: str, storage: str | None, sampler, identity: dict[str, Any]):
    """Create or load the study; a loaded one must have been created by the same search config."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage(name)
    check_storage_url(url)
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(study_name=name, storage=optuna_storage(url), sampler=sampler, direction="minimize", load_if_exists=True)
    except Exception as error:  # a bad URL or unreachable database
        raise DiffsearchError(f"--storage {url}: cannot open the study ({type(error).__name__}: {error})") from None
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
    url = storage or default_storage(name)
    check_storage_url(url)
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise DiffsearchError(f"no study {name!r}: {path} does not exist (see runs/)")
    try:
        return optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:
        raise DiffsearchError(f"no study {name!r} in {url}") from None
    except Exception as error:  # an unreachable server, a file that is not a study database
        raise DiffsearchError(f"--storage {url}: cannot open the study ({type(error).__name__}: {str(error).splitlines()[0]})") from None


def state_of(study) -> StudyState:
    return StudyState(lambda key: study.user_attrs.get(key), study.set_user_attr)


def history(study) -> list[Record]:
    """Every trial that carries a candidate, oldest first (value None unless complete)."""
    import optuna

    records = []
    for trial in study.get_trials(deepcopy=False):
        candidate = trial.user_attrs.get("candidate")
        if candidate is None:
            continue
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        records.append(Record(trial.number, candidate, value, trial.user_attrs.get("fingerprint", ""), trial.user_attrs.get("tags", {})))
    return records


def completed_value(study, fingerprint: str) -> tuple[int, float] | None:
    """(trial number, value) of a completed evaluation of the same candidate, if any."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("fingerprint") == fingerprint and "duplicate_of" not in trial.user_attrs:
            return trial.number, trial.value
    return None


def recover_stale(study) -> list[dict[str, Any]]:
    """Fail trials left RUNNING by a killed run; return their candidates to evaluate first."""
    import optuna

    pending = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (the run was killed); re-queued")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        if trial.user_attrs.get("candidate") is not None:
            pending.append({"candidate": trial.user_attrs["candidate"], "tags": trial.user_attrs.get("tags", {})})
    return pending


def count_evaluations(study) -> dict[str, int]:
    """Expensive evaluations (completed, not duplicates), failures and duplicates."""
    import optuna

    counts = {"expensive": 0, "failed": 0, "duplicates": 0}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            counts["duplicates" if "duplicate_of" in trial.user_attrs else "expensive"] += 1
        elif trial.state == optuna.trial.TrialState.FAIL:
            counts["failed"] += 1
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
        rows.append({"number": trial.number, "value": trial.value, "result": trial.user_attrs.get("result") or {},
                     "seconds": seconds, "label": (trial.user_attrs.get("tags") or {}).get("label")})
    return rows
