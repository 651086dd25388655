"""``diffsearch.Client``: submit, watch and fetch searches of a ``search serve`` server (stdlib HTTP only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError

TERMINAL = ("finished", "failed", "cancelled")


class Client:
    """A notebook's handle on a diffsearch server.

    Example:
        >>> client = Client("http://127.0.0.1:8600", token=None)
        >>> client.url
        'http://127.0.0.1:8600'
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _request(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            raise DiffsearchError(f"{method} {path}: {error.code} {detail}") from None
        except urllib.error.URLError as error:
            raise DiffsearchError(f"{self.url}: cannot reach the server ({error.reason})") from None

    def submit(self, config: dict[str, Any]) -> str:
        """Queue a search (a dict with the keys of a YAML run config); returns the study name."""
        return json.loads(self._request("POST", "/studies", config))["name"]

    def status(self, name: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """One study's detail (top candidates, cost, Pareto front), or every study's summary without a name."""
        return json.loads(self._request("GET", "/studies" if name is None else f"/studies/{name}"))

    def wait(self, name: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the study is finished, failed or cancelled; DiffsearchError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise DiffsearchError(f"study {name!r} still {status['status']} after {timeout:g} s")
            time.sleep(poll)

    def artifact(self, name: str, path: str | Path | None = None) -> dict[str, Any]:
        """The exported artifact as a dict (also written to ``path`` when given)."""
        raw = self._request("GET", f"/studies/{name}/artifact")
        if path is not None:
            Path(path).write_bytes(raw)
        return json.loads(raw)

    def cancel(self, name: str) -> dict[str, Any]:
        """Cancel a queued or running search."""
        return json.loads(self._request("POST", f"/studies/{name}/cancel"))
