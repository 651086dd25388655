"""Load on ``search serve``: status-request latency with N polling clients while 2 searches run, and the searches' throughput.

Each round runs two identical CPU-bound gmm searches at once on one server (``--workers 2``), once without clients and once
with ``--clients`` threads polling ``GET /studies`` and ``GET /studies/{name}`` every ``--interval`` seconds. Search
throughput is expensive evaluations per second of the study's own trial timestamps (first start to last completion).
Loopback only; every server, worker and client stops by itself.

    python benchmarks/service_load.py --rounds 2 --clients 20 --interval 0.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import optuna

import diffsearch
from diffsearch.testing.service import Server


def throughput(server: Server, name: str) -> float:
    """Expensive evaluations per second of one study, from its trials' own timestamps."""
    study = optuna.load_study(study_name=name, storage=server.storage)
    trials = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / span


def poll(url: str, paths: list[str], interval: float, stop: threading.Event, latencies: list[float]) -> None:
    """One client: alternate status requests every ``interval`` seconds until ``stop``."""
    index = 0
    while not stop.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(url + paths[index % len(paths)], timeout=30) as response:
            response.read()
        latencies.append(time.perf_counter() - started)
        index += 1
        stop.wait(max(interval - (time.perf_counter() - started), 0))


def one_round(server: Server, config: dict, tag: str, clients: int, interval: float) -> tuple[list[float], list[float]]:
    """Two searches at once, with ``clients`` pollers; (throughputs, latencies)."""
    client = diffsearch.Client(server.url)
    names = [client.submit({**config, "study": f"{tag}-{index}"}) for index in range(2)]
    stop, latencies = threading.Event(), []
    paths = ["/studies", *(f"/studies/{name}" for name in names)]
    threads = [threading.Thread(target=poll, args=(server.url, paths, interval, stop, latencies), daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for name in names:
        assert client.wait(name, timeout=900, poll=0.5)["status"] == "finished"
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return [throughput(server, name) for name in names], latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between one client's requests")
    parser.add_argument("--evals", type=int, default=30)
    parser.add_argument("--samples", type=int, default=2000)
    arguments = parser.parse_args()
    config = {"model": "gmm", "budget": "4nfe", "strategy": "random", "evals": arguments.evals,
              "search_samples": arguments.samples, "final_samples": 400, "cache": False}
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder), workers=2).start()
        try:
            rows = {"idle": [], "loaded": []}
            latencies: list[float] = []
            for round_index in range(arguments.rounds):
                for mode, clients in (("idle", 0), ("loaded", arguments.clients)):
                    speeds, seen = one_round(server, config, f"{mode}{round_index}", clients, arguments.interval)
                    rows[mode] += speeds
                    latencies += seen
                    print(f"round {round_index} {mode}: evaluations/s {[round(s, 2) for s in speeds]}", flush=True)
        finally:
            server.kill()
            server.stop_workers()
    report(rows, latencies, arguments)


def report(rows: dict[str, list[float]], latencies: list[float], arguments) -> None:
    idle, loaded = statistics.mean(rows["idle"]), statistics.mean(rows["loaded"])
    ordered = sorted(latencies)
    summary = {"clients": arguments.clients, "interval_s": arguments.interval, "rounds": arguments.rounds,
               "requests": len(ordered), "latency_p50_ms": 1e3 * ordered[len(ordered) // 2],
               "latency_p95_ms": 1e3 * ordered[int(0.95 * (len(ordered) - 1))], "latency_max_ms": 1e3 * ordered[-1],
               "throughput_idle": rows["idle"], "throughput_loaded": rows["loaded"],
               "throughput_drop_percent": 100 * (1 - loaded / idle),
               "idle_spread_percent": 100 * (max(rows["idle"]) - min(rows["idle"])) / idle}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
