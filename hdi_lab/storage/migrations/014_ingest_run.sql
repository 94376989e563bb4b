-- hdi_lab schema, version 14: which cluster run logged a chunk.
--
-- run_id: the id of the executor="dask" run whose task committed the chunk (NULL for local runs). A worker can
-- die after its task committed and before the caller received the result; Dask then runs the task again, which
-- finds the chunk stored. The retry reads the first attempt's logged counts by its run's id, so the run's report
-- still counts what it stored, while a chunk another run committed meanwhile stays skipped.
ALTER TABLE {s}.ingest_log ADD COLUMN run_id text;
