"""docker-compose.yml (Docker cannot run here): it parses and holds what the README promises."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.unit


def test_compose_file_services_health_volumes_and_secrets() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert set(services) == {"timescaledb", "jupyter", "redis", "dask-scheduler", "dask-worker"}
    assert services["redis"]["profiles"] == ["feast"]  # optional
    # optional Dask cluster: the notebook's image (same hdi_lab and Dask), the scheduler the notebook is given
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]
    assert scheduler["build"] == worker["build"] == services["jupyter"]["build"]
    assert scheduler["command"][:2] == ["dask", "scheduler"] and "8786" in scheduler["command"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert worker["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert services["jupyter"]["environment"]["HDI_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert not any("PASSWORD" in str(v) or "API_KEY" in str(v) for v in (worker.get("environment") or {}).values())
    assert ",dask]" in (ROOT / "docker" / "Dockerfile").read_text()
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in compose["volumes"], volume  # named volumes
    jupyter = services["jupyter"]
    assert jupyter["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert jupyter["build"]["dockerfile"] == "docker/Dockerfile" and (ROOT / "docker" / "Dockerfile").is_file()
    assert "./notebooks:/home/hdi/work/notebooks" in jupyter["volumes"]
    assert jupyter["environment"]["HDI_DATABASE_URL"].endswith("@timescaledb:5432/${POSTGRES_DB:-market}")
    # credentials come from .env: every variable the file requires is in the committed example
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"POSTGRES_PASSWORD", "JUPYTER_TOKEN"} <= required
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example)
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "notebook" in (ROOT / "docker" / "Dockerfile").read_text()
