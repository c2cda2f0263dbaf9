// Jobs: the list of previous jobs (GET /jobs), and the open job with its images and progress,
// kept current by Socket.IO events (image.update, job.progress, job.done) and REST polling.

import { ApiError, deleteJSON, getJSON } from './api.js';
import { Live } from './live.js';
import { hideViewer, showImage } from './results.js';
import {
  $, IMAGE_STATUS, JOB_STATUS, MODEL_NAMES, TERMINAL_JOB, badge, fillError, setConn, showError, state, when,
} from './ui.js';

const JOBS_PAGE = 20;

export const live = new Live({
  onEvent,
  onState: (kind, detail) => {
    if (kind === 'refused') {
      setConn('refused', detail);
      showError(new ApiError(0, 'connection_refused', detail || 'the live connection was refused'));
    } else {
      setConn(kind, detail);
    }
  },
  poll: pollJob,
});

export async function loadJobs(append) {
  const offset = append ? state.jobs.length : 0;
  const limit = append ? JOBS_PAGE : Math.min(100, Math.max(JOBS_PAGE, state.jobs.length));
  let body;
  try {
    body = await getJSON(`/jobs?limit=${limit}&offset=${offset}`);
  } catch (err) {
    showError(err);
    return;
  }
  state.jobs = append ? [...state.jobs, ...body.items] : body.items;
  state.jobsTotal = body.total;
  renderJobs();
}

/** Re-read the jobs list after `delay` ms; calls meanwhile join the pending one (a throttle,
 * so a stream of events refreshes it about once per delay). */
export function scheduleJobsRefresh(delay = 800) {
  if (state.jobsTimer && delay > 0) return;
  clearTimeout(state.jobsTimer);
  state.jobsTimer = setTimeout(() => {
    state.jobsTimer = null;
    if (state.key) loadJobs(false);
  }, delay);
}

export function renderJobs() {
  const ol = $('jobs');
  ol.replaceChildren();
  for (const job of state.jobs) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'job-row';
    button.dataset.jobId = job.id;
    if (state.job && state.job.id === job.id) button.setAttribute('aria-current', 'true');
    const top = document.createElement('span');
    top.className = 'job-row-top';
    const whenEl = document.createElement('span');
    whenEl.className = 'job-when';
    whenEl.textContent = when(job.created_at);
    top.append(whenEl, badge(job.status, JOB_STATUS));
    const what = document.createElement('span');
    what.className = 'job-what';
    const c = job.counts;
    const extra = [c.failed ? `${c.failed} failed` : '', c.cancelled ? `${c.cancelled} cancelled` : ''].filter(Boolean);
    what.textContent = `${MODEL_NAMES[job.model] || job.model} · ${c.done}/${c.total} done${extra.length ? ` · ${extra.join(' · ')}` : ''}`;
    const names = document.createElement('span');
    names.className = 'job-files';
    const shown = job.filenames || [];
    const more = c.total - shown.length;
    names.textContent = shown.join(', ') + (more > 0 ? ` +${more} more` : '');
    names.title = names.textContent;
    button.append(top, what, names);
    button.addEventListener('click', () => openJob(job.id));
    li.append(button);
    ol.append(li);
  }
  $('jobs-empty').hidden = state.jobs.length > 0 || !state.key;
  $('more-jobs').hidden = state.jobs.length >= state.jobsTotal;
}

function tally(images) {
  const counts = { total: images.length, queued: 0, dispatched: 0, processing: 0, done: 0, failed: 0, cancelled: 0 };
  for (const im of images) counts[im.status] = (counts[im.status] || 0) + 1;
  return counts;
}

function jobStatus(c) {
  const pending = c.queued + c.dispatched + c.processing;
  if (pending) return pending === c.queued ? 'queued' : 'running';
  if (c.done === c.total) return 'done';
  if (c.failed === c.total) return 'failed';
  if (c.cancelled) return 'cancelled';
  return 'partial';
}

export async function openJob(jobId, imageId = null, created = null) {
  if (!state.job || state.job.id !== jobId) {
    closeJob();
    state.progress = null;
  }
  state.opening = jobId;
  if (created) {
    state.job = { ...created, images: created.images.map((im) => ({ ...im, error: null, objects: null })) };
    renderJob();
  }
  let detail;
  try {
    detail = await getJSON(`/jobs/${encodeURIComponent(jobId)}`);
  } catch (err) {
    if (state.opening !== jobId) return;
    showError(err);
    if (created) live.follow(jobId);
    else closeJob();
    return;
  }
  if (state.opening !== jobId) return; // another job was opened meanwhile
  applyDetail(detail);
  updateHash();
  live.follow(jobId);
  if (imageId && state.job.images.some((im) => im.id === imageId)) await selectImage(imageId);
}

/** Show image `imageId` of the open job in the viewer (and in the address, for reloads). */
async function selectImage(imageId, reveal = false) {
  state.selected = imageId;
  renderImages();
  updateHash();
  const shown = showImage(imageId);
  const viewer = $('viewer');
  if (reveal && viewer.getBoundingClientRect().top > window.innerHeight - 120) {
    viewer.scrollIntoView({ block: 'start' }); // narrow screens: the viewer is below the list
  }
  await shown;
}

export function closeJob() {
  live.unfollow();
  state.job = null;
  state.opening = null;
  state.selected = null;
  hideViewer();
  $('job').hidden = true;
  $('job-notice').textContent = '';
  $('job-notice').hidden = true;
  $('welcome').hidden = false;
  document.title = 'CellSeg Serve';
  if (location.hash) history.replaceState(null, '', location.pathname);
}

/** Take GET /jobs/{id} as the truth; reload the viewer when the shown image has changed. */
function applyDetail(detail) {
  const before = state.job ? state.job.images.find((im) => im.id === state.selected) : null;
  state.job = detail;
  renderJob();
  const after = detail.images.find((im) => im.id === state.selected);
  if (after && (!before || before.status !== after.status)) showImage(after.id);
}

async function pollJob() {
  if (!state.job) return false;
  const jobId = state.job.id;
  let detail;
  try {
    detail = await getJSON(`/jobs/${jobId}`);
  } catch (err) {
    setConn(err.status ? 'polling' : 'offline', err.message);
    return true;
  }
  if (!state.job || state.job.id !== jobId) return false;
  applyDetail(detail);
  return !TERMINAL_JOB.has(detail.status);
}

function onEvent(name, data) {
  const job = state.job;
  if (!job || data.job_id !== job.id) {
    if (name !== 'job.progress') scheduleJobsRefresh();
    return;
  }
  if (name === 'image.update') {
    const image = job.images.find((im) => im.id === data.image_id);
    if (!image) return;
    const changed = image.status !== data.status;
    image.status = data.status;
    if (data.error) image.error = data.error;
    if (data.objects != null) image.objects = data.objects;
    job.counts = tally(job.images);
    job.status = jobStatus(job.counts);
    renderJob();
    if (changed && image.id === state.selected) showImage(image.id);
  } else if (name === 'job.progress') {
    state.progress = data;
    renderProgress();
  } else if (name === 'job.done') {
    pollJob();
    scheduleJobsRefresh(0);
  }
}

function duration(seconds) {
  if (seconds < 1) return 'under a second';
  if (seconds < 90) return `about ${Math.round(seconds)} s`;
  if (seconds < 5400) return `about ${Math.round(seconds / 60)} min`;
  return `about ${(seconds / 3600).toFixed(1)} h`;
}

function renderProgress() {
  const job = state.job;
  const c = tally(job.images);
  // cancelled images are neither work done nor work left: out of the bar and the count
  const finished = c.done + c.failed;
  const toDo = c.total - c.cancelled;
  const bar = $('job-progress');
  bar.max = Math.max(toDo, 1);
  bar.value = finished;
  const parts = [];
  if (TERMINAL_JOB.has(job.status)) {
    parts.push(`Finished: ${c.done} of ${c.total} done`);
    if (c.failed) parts.push(`${c.failed} failed`);
    if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  } else {
    parts.push(`${finished} of ${toDo} finished`);
    if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
    if (c.processing) parts.push(`${c.processing} processing`);
    const waiting = c.queued + c.dispatched;
    if (waiting) parts.push(`${waiting} waiting`);
    const p = state.progress && state.progress.job_id === job.id ? state.progress : null;
    if (p && p.queue_position) parts.push(`${p.queue_position} image${p.queue_position > 1 ? 's' : ''} of other jobs ahead`);
    if (p && p.eta_s) parts.push(`${duration(p.eta_s)} left`);
  }
  $('job-progress-text').textContent = parts.join(' · ');
  document.title = TERMINAL_JOB.has(job.status) ? 'CellSeg Serve' : `(${finished}/${toDo}) CellSeg Serve`;
}

function renderJob() {
  const job = state.job;
  if (!job) return;
  job.counts = tally(job.images);
  $('welcome').hidden = true;
  const section = $('job');
  section.hidden = false;
  section.dataset.jobId = job.id;
  section.dataset.status = job.status;
  $('job-title').textContent = `Job ${job.id.slice(0, 8)}`;
  $('job-title').title = job.id;
  const threshold = typeof job.threshold === 'number' ? job.threshold.toFixed(2) : job.threshold;
  $('job-meta').textContent = [
    MODEL_NAMES[job.model] || job.model,
    `threshold ${threshold}`,
    `min. area ${job.min_area} px`,
    when(job.created_at),
  ].filter(Boolean).join(' · ');
  $('job-status').replaceWith(Object.assign(badge(job.status, JOB_STATUS), { id: 'job-status' }));
  const terminal = TERMINAL_JOB.has(job.status);
  const waiting = job.counts.queued + job.counts.dispatched; // what a cancel can still stop
  $('cancel-job').hidden = terminal || !waiting;
  $('job-geojson').hidden = !terminal || !job.counts.done;
  $('job-coco').hidden = !terminal || !job.counts.done;
  renderProgress();
  renderImages();
  for (const row of document.querySelectorAll('.job-row')) {
    if (row.dataset.jobId === job.id) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
  const listed = state.jobs.find((j) => j.id === job.id);
  if (listed && (listed.status !== job.status || listed.counts.done !== job.counts.done)) {
    Object.assign(listed, { status: job.status, counts: { ...listed.counts, ...job.counts } });
    renderJobs();
  }
}

function renderImages() {
  const ul = $('images');
  ul.replaceChildren();
  for (const image of state.job.images) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'image-row';
    button.dataset.imageId = image.id;
    button.dataset.status = image.status;
    if (image.id === state.selected) button.setAttribute('aria-current', 'true');
    const dot = document.createElement('span');
    dot.className = `dot status-${image.status}`;
    dot.setAttribute('aria-hidden', 'true');
    const name = document.createElement('span');
    name.className = 'image-name';
    name.textContent = image.filename;
    const info = document.createElement('span');
    info.className = 'image-info';
    if (image.status === 'done' && image.objects != null) {
      info.textContent = `${image.objects} object${image.objects === 1 ? '' : 's'}`;
    } else if (image.width && image.height) {
      info.textContent = `${image.width} × ${image.height}`;
    }
    button.append(dot, name, info, badge(image.status, IMAGE_STATUS));
    if (image.status === 'failed' && image.error) {
      const err = document.createElement('span');
      err.className = 'image-error';
      fillError(err, new ApiError(0, image.error.code, image.error.message));
      button.append(err);
    }
    button.addEventListener('click', () => selectImage(image.id, true));
    li.append(button);
    ul.append(li);
  }
}

function updateHash() {
  if (!state.job) return;
  const params = new URLSearchParams({ job: state.job.id });
  if (state.selected) params.set('image', state.selected);
  history.replaceState(null, '', `#${params}`);
}

async function cancelJob() {
  const job = state.job;
  if (!job) return;
  const button = $('cancel-job');
  button.disabled = true;
  try {
    const r = await deleteJSON(`/jobs/${job.id}`);
    $('job-notice').textContent = r.cancelled
      ? `Cancelled ${r.cancelled} image${r.cancelled > 1 ? 's' : ''}${r.running ? `; ${r.running} already running will finish` : ''}.`
      : `Nothing left to cancel${r.running ? `; ${r.running} running will finish` : ''}.`;
    $('job-notice').hidden = false;
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
  await pollJob();
  scheduleJobsRefresh(0);
}

export function initJobs() {
  $('refresh-jobs').addEventListener('click', () => loadJobs(false));
  $('more-jobs').addEventListener('click', () => loadJobs(true));
  $('cancel-job').addEventListener('click', cancelJob);
}
