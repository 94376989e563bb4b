"""Storage: PostgreSQL/TimescaleDB tables, migrations, binary COPY in and out."""
