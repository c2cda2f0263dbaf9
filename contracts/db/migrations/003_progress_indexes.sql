-- Version 3: indexes for a job's progress (contracts.db.work.job_progress, run once per image a
-- worker finishes). Without them its "images/s over the last minute" and "images waiting ahead"
-- scanned every image retained (a sequential scan of the whole table twice per image: cost
-- growing with retention, not with the work in hand). Partial, so they hold only what those
-- two counts read: finished images by finish time, waiting or running images by arrival.

CREATE INDEX images_finished ON images (finished_at) WHERE status IN ('done', 'failed');
CREATE INDEX images_waiting ON images (created_at)
    WHERE status IN ('queued', 'dispatched', 'processing');
