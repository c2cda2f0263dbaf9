// The new-job form: models from GET /models, threshold, minimum area, plane and channel of
// stacks, images picked or dropped (checked before upload: picking.js), and the upload
// (POST /jobs, split into several jobs over the service's limits) with its progress; a refusal
// is shown as the API words it.

import { createJob, getJSON } from './api.js';
import { formatBytes, planJobs, refusal } from './picking.js';
import { $, MODEL_NAMES, STORE, fillError, setConn, showError, state } from './ui.js';

let onCreated = async () => {};

export async function loadModels() {
  let body;
  try {
    body = await getJSON('/models');
  } catch (err) {
    showError(err);
    setConn(err.status === 401 ? 'refused' : 'offline', err.message);
    setFormEnabled(false);
    return false;
  }
  const select = $('model');
  const wanted = select.value || localStorage.getItem(STORE.model);
  select.replaceChildren();
  for (const m of body.models) {
    const option = document.createElement('option');
    option.value = m.name;
    const parts = [MODEL_NAMES[m.name] || m.name];
    if (m.variant) parts.push(m.variant);
    if (!m.workers.length) parts.push('no worker running');
    option.textContent = parts.join(' · ');
    option.dataset.workers = String(m.workers.length);
    const size = Array.isArray(m.input_size) ? m.input_size.join(' × ') : m.input_size;
    option.dataset.inputSize = size ? String(size) : '';
    select.append(option);
  }
  const serving = body.models.find((m) => m.workers.length);
  if (wanted && body.models.some((m) => m.name === wanted)) select.value = wanted;
  else if (serving) select.value = serving.name;
  const limits = body.limits;
  $('limits').textContent = `PNG, JPEG or TIFF, 8 or 16 bit · up to ${limits.max_files_per_job} images and ${limits.max_upload_mb} MB per job`;
  state.limits = limits;
  setFormEnabled(true);
  describeModel();
  return true;
}

function describeModel() {
  const option = $('model').selectedOptions[0];
  if (!option) return;
  const workers = Number(option.dataset.workers);
  const size = option.dataset.inputSize;
  $('model-hint').textContent = workers
    ? `${workers} worker${workers > 1 ? 's' : ''} serving it${size ? ` · ${size} px input` : ''}`
    : 'No worker serves this model now: jobs wait until one starts.';
}

export function setFormEnabled(enabled) {
  $('model').disabled = !enabled;
  if (!enabled) {
    $('model').replaceChildren(new Option('Enter an API key first', ''));
    $('model-hint').textContent = '';
  }
  updateSubmit();
}

function updateSubmit() {
  const n = state.picked.length;
  const button = $('submit');
  button.disabled = !n || $('model').disabled || button.dataset.busy === '1';
  button.textContent = n ? `Segment ${n} image${n > 1 ? 's' : ''}` : 'Segment';
}

function showFormError(err) {
  const box = $('form-error');
  fillError(box, err);
  box.hidden = false;
}

function clearFormError() {
  $('form-error').hidden = true;
  $('form-error').replaceChildren();
}

async function addFiles(list) {
  const files = [...list];
  if (!files.length) return;
  clearFormError();
  const reasons = await Promise.all(files.map((f) => refusal(f, state.limits)));
  files.forEach((file, i) => {
    if (reasons[i]) state.refused.push({ name: file.name, reason: reasons[i] });
    else state.picked.push(file);
  });
  renderRefused();
  renderPicked();
}

/** The files refused before upload, each with why. */
function renderRefused() {
  const box = $('refused');
  const ul = $('refused-list');
  ul.replaceChildren();
  for (const { name, reason } of state.refused) {
    const li = document.createElement('li');
    const strong = document.createElement('strong');
    strong.textContent = name;
    li.append(strong, `: ${reason}`);
    ul.append(li);
  }
  box.hidden = !state.refused.length;
  $('refused-title').textContent = `${state.refused.length} file${state.refused.length > 1 ? 's' : ''} not uploaded`;
}

function renderPicked() {
  const ul = $('picked');
  ul.replaceChildren();
  state.picked.forEach((file, i) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'picked-name';
    name.textContent = file.name;
    const size = document.createElement('span');
    size.className = 'picked-size';
    size.textContent = formatBytes(file.size);
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'icon';
    remove.setAttribute('aria-label', `Remove ${file.name}`);
    remove.textContent = '×';
    remove.addEventListener('click', () => {
      state.picked.splice(i, 1);
      renderPicked();
    });
    li.append(name, size, remove);
    ul.append(li);
  });
  updateSubmit();
}

function optionalIndex(id) {
  const value = $(id).value.trim();
  return value === '' ? null : value;
}

async function submitJob(event) {
  event.preventDefault();
  if (!state.picked.length) return;
  clearFormError();
  const files = [...state.picked];
  const params = {
    model: $('model').value,
    threshold: Number($('threshold').value).toFixed(2),
    min_area: $('min-area').value.trim(),
  };
  params.split = $('split').checked ? 'true' : 'false';
  for (const [name, id] of [['plane', 'plane'], ['channel', 'channel'], ['diameter', 'diameter']]) {
    const value = optionalIndex(id);
    if (value !== null) params[name] = value;
  }
  localStorage.setItem(STORE.model, params.model);
  localStorage.setItem(STORE.threshold, params.threshold);
  localStorage.setItem(STORE.minArea, params.min_area);
  const plan = planJobs(files, state.limits);
  const total = files.reduce((n, f) => n + f.size, 0) || 1;
  const button = $('submit');
  const bar = $('upload-progress');
  button.dataset.busy = '1';
  button.disabled = true;
  bar.value = 0;
  bar.hidden = false;
  const created = [];
  let sent = 0;
  try {
    for (const [i, batch] of plan.entries()) {
      button.textContent = plan.length > 1 ? `Uploading job ${i + 1} of ${plan.length}…` : 'Uploading…';
      const size = batch.reduce((n, f) => n + f.size, 0);
      const job = await createJob(batch, params, (f) => { bar.value = (sent + f * size) / total; });
      sent += size;
      job.images.forEach((image, k) => { if (batch[k]) state.files.set(image.id, batch[k]); });
      created.push(job);
      state.picked = state.picked.filter((f) => !batch.includes(f)); // sent: not sent again
    }
  } catch (err) {
    showFormError(err);
  } finally {
    button.dataset.busy = '';
    bar.hidden = true;
    renderPicked();
  }
  if (!created.length) return;
  const limits = state.limits;
  $('form-note').textContent = created.length > 1
    ? `Split into ${created.length} jobs to stay within the service's limits (${limits.max_files_per_job} images, ${limits.max_upload_mb} MB per job).`
    : '';
  $('form-note').hidden = created.length < 2;
  state.refused = [];
  renderRefused();
  await onCreated(created[0], created);
}

function initDrop() {
  const drop = $('drop');
  let depth = 0;
  const hasFiles = (e) => [...((e.dataTransfer && e.dataTransfer.types) || [])].includes('Files');
  window.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    depth += 1;
    drop.classList.add('dragging');
  });
  window.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) drop.classList.remove('dragging');
  });
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => {
    e.preventDefault(); // anywhere on the page: never navigate away to the dropped file
    depth = 0;
    drop.classList.remove('dragging');
    if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files);
  });
}

/** Wire the form; `created(first, all)` is called with the 202 bodies of the jobs one
 * submission made (several when it was split). */
export function initForm({ onCreated: created }) {
  onCreated = created;
  $('model').addEventListener('change', describeModel);
  const threshold = $('threshold');
  const showThreshold = () => { $('threshold-out').value = Number(threshold.value).toFixed(2); };
  threshold.addEventListener('input', showThreshold);
  threshold.value = localStorage.getItem(STORE.threshold) || threshold.value;
  showThreshold();
  $('min-area').value = localStorage.getItem(STORE.minArea) || $('min-area').value;
  $('files').addEventListener('change', (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    addFiles(files);
  });
  $('refused-clear').addEventListener('click', () => {
    state.refused = [];
    renderRefused();
  });
  $('job-form').addEventListener('submit', submitJob);
  initDrop();
}
