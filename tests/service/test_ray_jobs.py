"""``search serve --ray-address``: jobs run as Ray Jobs on a local Ray cluster (with its job API)."""

from __future__ import annotations

import os
import socket
import sys

import pytest

import diffsearch
from diffsearch.testing.service import TINY, wait_for

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def dashboard():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray.init(address="local", num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             log_to_driver=False, configure_logging=False)
    yield f"http://127.0.0.1:{port}"
    ray.shutdown()


def test_a_job_runs_as_a_ray_job(make_server, dashboard, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_RAY_PYTHON", sys.executable)
    server = make_server(extra=["--ray-address", dashboard])
    client = diffsearch.Client(server.url)
    name = client.submit({**TINY, "study": "on-ray"})
    done = client.wait(name, timeout=240, poll=0.5)
    assert done["status"] == "finished" and done["evaluations"] == 6, done
    worker = server.jobs()[name]["worker"]
    assert worker["kind"] == "ray" and worker["submission_id"]
    from ray.job_submission import JobSubmissionClient

    jobs_api = JobSubmissionClient(dashboard)
    wait_for(lambda: str(jobs_api.get_job_status(worker["submission_id"])).endswith(("SUCCEEDED", "FAILED", "STOPPED")), 60)
    assert str(jobs_api.get_job_status(worker["submission_id"])).endswith("SUCCEEDED")
    assert client.artifact(name)["schema_version"].startswith("diffsearch.")
    assert os.path.isfile(server.folder / "runs" / name / "best.json")
