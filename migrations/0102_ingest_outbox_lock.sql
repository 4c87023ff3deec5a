-- The relay's recovery scan locks outbox rows (SELECT ... FOR UPDATE SKIP LOCKED) so that several ingest processes
-- never deliver the same page at once; row locks need the UPDATE privilege.
GRANT UPDATE ON ingest_outbox TO {{ingest}};
