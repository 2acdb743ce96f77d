-- A GIN index with fastupdate keeps new entries in a pending list that
-- every search scans until a vacuum merges it: after a burst of
-- activations each device look-up (the no-mixing reaction runs one per
-- paid activation) took 3.8 ms (pg_stat_statements, bench/activation.sh).
-- Without it an insert updates the index at once and searches stay fast.
ALTER INDEX activations_components SET (fastupdate = off);
ALTER INDEX trials_components SET (fastupdate = off);
SELECT gin_clean_pending_list('activations_components');
SELECT gin_clean_pending_list('trials_components');
