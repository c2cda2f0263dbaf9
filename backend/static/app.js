// CellSeg Serve's page: API key, new job (model, threshold, images), the open job's images with
// live progress, the result viewer, and the list of previous jobs. No framework: state lives in
// `state` (ui.js), and render functions rebuild the parts of the page that show it.
//
//   app.js      the API key and start-up          form.js     the new-job form and upload
//   jobs.js     jobs list, open job, progress     results.js  one image's result, downloads
//   viewer.js   canvas overlay, metrics table     live.js     Socket.IO + polling fallback
//   api.js      REST calls and ApiError           ui.js       shared state, errors, labels

import { ApiError, setKey } from './api.js';
import { initForm, loadModels, setFormEnabled } from './form.js';
import { closeJob, initJobs, live, loadJobs, openJob, renderJobs, scheduleJobsRefresh } from './jobs.js';
import { initResults } from './results.js';
import { $, STORE, clearError, setConn, showError, state } from './ui.js';

/** Use `key` for every call ('' forgets it): check it, connect, list the jobs. */
async function useKey(key) {
  const hash = new URLSearchParams(location.hash.slice(1)); // before closeJob() clears it
  state.key = key;
  setKey(key);
  clearError();
  closeJob();
  state.jobs = [];
  renderJobs();
  if (!key) {
    live.close();
    setConn('off');
    setFormEnabled(false);
    return;
  }
  localStorage.setItem(STORE.key, key);
  if (!(await loadModels())) {
    live.close();
    return;
  }
  live.connect(key);
  await loadJobs(false);
  if (hash.get('job')) await openJob(hash.get('job'), hash.get('image'));
}

function start() {
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('api-key').value.trim();
    if (!key) {
      showError(new ApiError(0, 'missing_key', 'enter an API key (it starts with csk_)'));
      return;
    }
    useKey(key);
  });
  $('forget-key').addEventListener('click', () => {
    localStorage.removeItem(STORE.key);
    $('api-key').value = '';
    useKey('');
  });
  $('alert-close').addEventListener('click', clearError);
  initForm({
    onCreated: async (job) => {
      await openJob(job.id, null, job);
      scheduleJobsRefresh(0);
    },
  });
  initJobs();
  initResults();
  const key = localStorage.getItem(STORE.key) || '';
  $('api-key').value = key;
  if (key) {
    useKey(key);
  } else {
    setConn('off');
    $('api-key').focus();
  }
}

start();
