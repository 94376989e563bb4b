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
    assert set(services) == {"timescaledb", "jupyter", "redis"}
    assert services["redis"]["profiles"] == ["feast"]  # optional
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
