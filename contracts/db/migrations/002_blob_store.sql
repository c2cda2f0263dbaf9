-- Version 2: masks in the blob store (STORAGE_URL), retention.
-- A result's label mask is the object mask_key ('masks/<sha256 of the PNG>'); rows written
-- before keep their bytes in mask_png. Uploads and masks are content addressed and may be
-- shared by several rows, so deleting one asks these indexes whether any row still refers to it.

ALTER TABLE results ALTER COLUMN mask_png DROP NOT NULL;
ALTER TABLE results ADD COLUMN mask_key TEXT;
ALTER TABLE results ADD CONSTRAINT results_mask_stored
    CHECK (mask_key IS NOT NULL OR mask_png IS NOT NULL);

CREATE INDEX results_mask_key ON results (mask_key) WHERE mask_key IS NOT NULL;
CREATE INDEX images_sha256 ON images (sha256);
-- retention scans jobs by age (a job finished before the cutoff was created before it)
CREATE INDEX jobs_created ON jobs (created_at);

-- Blobs whose rows retention deleted, waiting for their objects to be deleted (once no row
-- refers to them any more). Queued in the transaction that deletes the rows, so a crash or a
-- store outage between the two leaves them queued for the next run, never forgotten.
CREATE TABLE blob_deletions (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('upload', 'mask')),
    queued_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
