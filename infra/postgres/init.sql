-- Databases of the licensing services, one per service (docker-compose only;
-- infra/postgres/up.sh creates the same natively). Runs once, on an empty
-- data volume, as the POSTGRES_USER (licensing), who owns them.
CREATE DATABASE issuance OWNER licensing;
CREATE DATABASE activation OWNER licensing;
CREATE DATABASE domain_binding OWNER licensing;
CREATE DATABASE grant_sync OWNER licensing;
CREATE DATABASE projector OWNER licensing;
