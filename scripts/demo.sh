#!/usr/bin/env bash
# The main job on a fresh machine: set up, then ingest the offline sample data into the embedded
# PostgreSQL, query it and print a summary. Set HDI_DATABASE_URL to use your own server instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hdi demo "$@"
