-- Domain claims are now written in the transaction of the binding's events
-- (the inline projection of DomainBinding): a claim exists exactly while its
-- license is bound to the domain. Claims of the former scheme, taken before
-- the event and released after it, are rebuilt from the bindings: orphans
-- (a crash between claim and event) go, a binding without its claim gets
-- it. Were two licenses ever bound to one domain, one of them (the binding
-- updated earliest) keeps the claim; the other can still change or reset
-- its binding.
DELETE FROM domain_claims c
 WHERE NOT EXISTS (
   SELECT 1 FROM bindings b
    WHERE b.license_id = c.license_id AND b.product = c.product
      AND b.domain = c.domain AND NOT b.released);
INSERT INTO domain_claims (product, domain, license_id)
SELECT product, domain, license_id FROM bindings
 WHERE domain IS NOT NULL AND NOT released
 ORDER BY updated_at, license_id
ON CONFLICT (product, domain) DO NOTHING;

-- A binding's transaction lets go of the license's other claims by license.
CREATE INDEX domain_claims_license_idx ON domain_claims (license_id);
