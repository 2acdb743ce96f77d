-- As activation's device indexes (its migration gin_without_pending_list):
-- GIN's pending list is scanned by every search until a vacuum merges it,
-- so device look-ups slow down after a burst of activations.
ALTER INDEX activation_replica_components SET (fastupdate = off);
SELECT gin_clean_pending_list('activation_replica_components');
