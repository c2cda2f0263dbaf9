// Shared by the page's modules: element lookup, the page state, labels, and how errors and
// statuses are shown. Errors are always shown as the API words them: message, code, status.

import { ApiError } from './api.js';

export const $ = (id) => document.getElementById(id);
export const STORE = { key: 'cellseg.apiKey', model: 'cellseg.model', threshold: 'cellseg.threshold', minArea: 'cellseg.minArea' };

export const MODEL_NAMES = { hrnet: 'HRNetV2', cbam_resunet: 'CBAM-ResUNet', unet: 'U-Net' };

export const IMAGE_STATUS = {
  queued: 'Queued', dispatched: 'Queued', processing: 'Processing', done: 'Done', failed: 'Failed', cancelled: 'Cancelled',
};

export const JOB_STATUS = {
  queued: 'Queued', running: 'Running', done: 'Done', failed: 'Failed', cancelled: 'Cancelled', partial: 'Partly done',
};

export const TERMINAL_JOB = new Set(['done', 'failed', 'cancelled', 'partial']);

export const state = {
  key: '',
  picked: [], // File[] chosen for the next job
  refused: [], // {name, reason} of files refused before upload
  files: new Map(), // image id -> File: originals uploaded (or chosen) in this tab
  jobs: [], // GET /jobs items loaded so far
  jobsTotal: 0,
  job: null, // GET /jobs/{id} of the open job
  progress: null, // the open job's last job.progress event
  selected: null, // image id shown in the viewer
  view: { raw: null, stretched: null },
  viewToken: 0,
  jobsTimer: null,
  opening: null, // id of the job being opened (a later click wins)
};

export function fillError(target, err) {
  const api = err instanceof ApiError ? err : new ApiError(0, 'error', String(err && err.message ? err.message : err));
  target.replaceChildren();
  const message = document.createElement('strong');
  message.className = 'error-message';
  message.textContent = api.message;
  const meta = document.createElement('span');
  meta.className = 'error-meta';
  const code = document.createElement('code');
  code.className = 'error-code';
  code.textContent = api.code;
  meta.append(code);
  if (api.status) meta.append(` HTTP ${api.status}`);
  target.append(message, ' ', meta);
  return api;
}

export function showError(err) {
  const api = err instanceof ApiError ? err : new ApiError(0, 'error', String(err));
  $('alert-message').textContent = api.message;
  $('alert-code').textContent = api.code;
  $('alert-status').textContent = api.status ? `HTTP ${api.status}` : '';
  $('alert').hidden = false;
}

export function clearError() {
  $('alert').hidden = true;
}

export function setConn(kind, detail) {
  const conn = $('conn');
  const text = {
    off: 'No key',
    connecting: 'Connecting…',
    live: 'Live updates',
    polling: 'Polling for updates',
    refused: 'Key not accepted',
    offline: 'Service unreachable',
  }[kind] || kind;
  conn.dataset.state = kind;
  conn.textContent = text;
  conn.title = detail || '';
}

export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleString([], { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}

export function badge(status, labels) {
  const span = document.createElement('span');
  span.className = `badge status-${status}`;
  span.textContent = labels[status] || status;
  return span;
}
