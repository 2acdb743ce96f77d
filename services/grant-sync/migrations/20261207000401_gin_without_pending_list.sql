-- As activation's device indexes (its migration gin_without_pending_list):
-- GIN's pending list is scanned by every search until a vacuum merges it.
ALTER INDEX clients_licenses SET (fastupdate = off);
SELECT gin_clean_pending_list('clients_licenses');
