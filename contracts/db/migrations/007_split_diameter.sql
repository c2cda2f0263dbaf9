-- Instance separation and object size, per job.
-- split: touching objects are separated (true unless the request said split=false).
-- diameter: the objects' diameter in pixels the images are rescaled for (NULL: as they are);
-- diameter_auto: estimate it per image instead (diameter is then NULL).

ALTER TABLE jobs ADD COLUMN split BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE jobs ADD COLUMN diameter DOUBLE PRECISION CHECK (diameter > 0);
ALTER TABLE jobs ADD COLUMN diameter_auto BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE jobs ADD CONSTRAINT jobs_one_diameter CHECK (NOT (diameter_auto AND diameter IS NOT NULL));
