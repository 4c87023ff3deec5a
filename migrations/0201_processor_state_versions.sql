-- Each stored engine state counts the batches that changed it. The Faust runner keeps its own copy in a changelog
-- table, written only after the database commit, so after a crash that copy may be older than the row here; the
-- version tells which one is current without reading the state itself.
ALTER TABLE processor_states ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);
