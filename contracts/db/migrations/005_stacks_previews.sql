-- Stacks and previews.
-- A job may name the plane of a TIFF stack and the channel to segment (NULL: the file must be
-- one 2-D image; imageheader.stack). A result may carry a preview of its original: an 8-bit PNG
-- with the engine's percentile contrast, in the blob store under preview_key, deleted by
-- retention like masks.

ALTER TABLE jobs ADD COLUMN plane INTEGER CHECK (plane >= 0);
ALTER TABLE jobs ADD COLUMN channel INTEGER CHECK (channel >= 0);
ALTER TABLE results ADD COLUMN preview_key TEXT;
CREATE INDEX results_preview_key ON results (preview_key) WHERE preview_key IS NOT NULL;
