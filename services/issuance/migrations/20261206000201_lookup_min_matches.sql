-- How many components make two devices one under the license's policy:
-- recovery by device matches each live seat under its own license's rule.
-- NULL for licenses stored before; they read as the default policy's.
ALTER TABLE license_lookup ADD COLUMN fingerprint_min_matches integer;
