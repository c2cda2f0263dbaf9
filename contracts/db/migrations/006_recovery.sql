-- Version 6: recovery after a crash or a restart.
-- images.worker: the worker that claimed the image, so the dispatcher puts back in the queue
--   what a worker held when its heartbeat expired (instead of waiting for the broker's
--   visibility timeout).
-- images.dispatches: how many times the image was released to the broker; each Celery message
--   carries the number it was sent with, and a task whose number is not the image's current one
--   (a message requeued meanwhile, or one that survived a broker restart) does nothing.
-- jobs.done_sent_at: when job.done was published; set only after the publish succeeded, so a
--   job whose announcement was lost (Redis restarting) is announced again by the dispatcher.
ALTER TABLE images ADD COLUMN worker TEXT;
ALTER TABLE images ADD COLUMN dispatches INTEGER NOT NULL DEFAULT 0;
CREATE INDEX images_processing_worker ON images (worker) WHERE status = 'processing';
ALTER TABLE jobs ADD COLUMN done_sent_at TIMESTAMPTZ;
-- jobs finished before this version were announced already
UPDATE jobs SET done_sent_at = finished_at WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_done_unsent ON jobs (created_at) WHERE done_sent_at IS NULL;
