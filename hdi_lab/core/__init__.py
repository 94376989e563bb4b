"""The ingestion core: sessions, the chunked ingest, validation and quarantine, retrieval, discovery,
comparison and the catalogue. It imports providers, storage and dbn; front ends import it."""
