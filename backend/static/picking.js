// Files chosen for a job, checked before any byte is uploaded, and split into jobs that fit the
// service's limits (GET /models → limits), as the command-line client does:
//   - the type comes from the file's first bytes (PNG, JPEG or TIFF), not from its name;
//   - an empty file, or one larger than a whole job may be (MAX_UPLOAD_MB), is refused;
//   - the rest goes in order into jobs of at most MAX_FILES_PER_JOB files and MAX_UPLOAD_MB.

const MB = 1024 * 1024;
const SIGNATURES = [
  ['PNG', [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  ['JPEG', [0xff, 0xd8, 0xff]],
  ['TIFF', [0x49, 0x49, 0x2a, 0x00]],
  ['TIFF', [0x4d, 0x4d, 0x00, 0x2a]],
  ['TIFF', [0x49, 0x49, 0x2b, 0x00]], // BigTIFF
  ['TIFF', [0x4d, 0x4d, 0x00, 0x2b]],
];

/** 'PNG', 'JPEG' or 'TIFF' from a file's first bytes, else null. */
export function formatOf(head) {
  for (const [name, magic] of SIGNATURES) {
    if (head.length >= magic.length && magic.every((b, i) => head[i] === b)) return name;
  }
  return null;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < MB) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / MB).toFixed(1)} MB`;
}

/** Why `file` cannot be sent (a sentence), or null when it may be. */
export async function refusal(file, limits) {
  if (file.size === 0) return 'the file is empty';
  if (limits && file.size > limits.max_upload_mb * MB) {
    return `${formatBytes(file.size)} is more than the service takes per job (${limits.max_upload_mb} MB, MAX_UPLOAD_MB)`;
  }
  let head;
  try {
    head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  } catch {
    return 'the file cannot be read';
  }
  if (!formatOf(head)) return 'its content is not a PNG, JPEG or TIFF image';
  return null;
}

/** `files` in order, in jobs of at most `max_files_per_job` files and `max_upload_mb` MB. */
export function planJobs(files, limits) {
  const maxFiles = Math.max(1, limits ? limits.max_files_per_job : files.length);
  const budget = limits ? limits.max_upload_mb * MB : Infinity;
  const jobs = [];
  let current = [];
  let bytes = 0;
  for (const file of files) {
    if (current.length && (current.length >= maxFiles || bytes + file.size > budget)) {
      jobs.push(current);
      current = [];
      bytes = 0;
    }
    current.push(file);
    bytes += file.size;
  }
  if (current.length) jobs.push(current);
  return jobs;
}
