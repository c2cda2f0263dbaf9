-- CellSeg Serve schema, version 1.
-- Images wait here (status 'queued') until the dispatcher releases them to Celery in a fair
-- order over users; the result upsert is keyed by image id so a redelivered task stores once.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    api_key_hash  TEXT NOT NULL UNIQUE,          -- sha256 hex of the API key
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id            UUID PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    model         TEXT NOT NULL,
    threshold     DOUBLE PRECISION NOT NULL,
    min_area      INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ,                   -- set once, when job.done is emitted
    sync          BOOLEAN NOT NULL DEFAULT FALSE -- created by POST /segment
);
CREATE INDEX jobs_user_created ON jobs (user_id, created_at DESC, id);

-- queued → dispatched → processing → done | failed ; queued|dispatched → cancelled
CREATE TABLE images (
    id            UUID PRIMARY KEY,
    job_id        UUID NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,              -- position within the job
    filename      TEXT NOT NULL,
    sha256        TEXT NOT NULL,                 -- upload stored as UPLOAD_DIR/<sha256>
    size_bytes    BIGINT NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued','dispatched','processing','done','failed','cancelled')),
    error_code    TEXT,
    error         TEXT,
    queue         TEXT,                          -- Celery queue it was released to
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at TIMESTAMPTZ,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    UNIQUE (job_id, seq)
);
CREATE INDEX images_job ON images (job_id, seq);
CREATE INDEX images_queued ON images (user_id, created_at, seq) WHERE status = 'queued';
CREATE INDEX images_in_flight ON images (queue) WHERE status IN ('dispatched', 'processing');

CREATE TABLE results (
    image_id      UUID PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    objects       INTEGER NOT NULL,
    result        JSONB NOT NULL,                -- SegmentationResult.to_json() (+ width, height)
    geojson       JSONB NOT NULL,                -- SegmentationResult.to_geojson()
    coco          JSONB NOT NULL,                -- SegmentationResult.to_coco(image_id=seq)
    mask_png      BYTEA NOT NULL,                -- uint16 label image
    inference_ms  DOUBLE PRECISION,
    batch_size    INTEGER,
    worker        TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- deficit round robin state of the dispatcher, per user
CREATE TABLE dispatch_credit (
    user_id       BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    deficit       DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_served   TIMESTAMPTZ
);
