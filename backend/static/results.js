// The result of one image: the viewer (the service's preview of the original, which the worker
// renders for every format with the engine's auto-contrast; else the file from this browser, or
// a blank canvas of the image's size; with the polygons, the object count and the
// measurements) and the downloads (GeoJSON, COCO, label mask, measurements CSV, and the whole
// job's), fetched with the API key and saved from a blob.

import { ApiError, getBlob, getJSON } from './api.js';
import { $, fillError, showError, state } from './ui.js';
import { Viewer, decodeFile, measurementsCsv, stretchContrast } from './viewer.js';

const DOWNLOADS = ['dl-geojson', 'dl-coco', 'dl-mask', 'dl-csv'];

const viewer = new Viewer({
  canvas: $('canvas'),
  stage: $('stage'),
  table: $('metrics'),
  tableNote: $('metrics-note'),
  options: { fill: $('show-fill'), outline: $('show-outline') },
  onFocus: showObjectInfo,
});

function showObjectInfo(obj) {
  const info = $('hover-info');
  if (!obj) {
    info.replaceChildren();
    return;
  }
  const name = document.createElement('strong');
  name.textContent = `Object ${obj.id}`;
  const holes = (obj.holes || []).length;
  const area = obj.metrics && typeof obj.metrics.area === 'number' ? ` · area ${Math.round(obj.metrics.area)} px` : '';
  info.replaceChildren(name, `${area}${holes ? ` · ${holes} hole${holes > 1 ? 's' : ''}` : ''}`);
}

function currentBase() {
  const { raw } = state.view;
  if (!raw) return null;
  if (!$('auto-contrast').checked) return raw;
  if (!state.view.stretched) state.view.stretched = stretchContrast(raw);
  return state.view.stretched;
}

/** Show a message (or an error) in place of the canvas. */
function setViewerState(text, err) {
  const box = $('viewer-state');
  if (err) fillError(box, err);
  else box.textContent = text;
  box.hidden = false;
  $('canvas').hidden = true;
  $('metrics-wrap').hidden = true;
  $('viewer-count').hidden = true;
  $('viewer-note').textContent = '';
  $('metrics-note').textContent = '';
  $('source-pick').hidden = true;
  $('toolbar').hidden = true;
  $('downloads').hidden = true;
  for (const id of DOWNLOADS) $(id).disabled = true;
  viewer.clear();
}

function pendingText(image) {
  if (image.status === 'cancelled') return 'This image was cancelled before it started.';
  if (image.status === 'processing') return 'Segmenting this image…';
  return 'Waiting in the queue; the result appears here when it is done.';
}

export function hideViewer() {
  state.viewToken += 1;
  $('viewer').hidden = true;
  viewer.clear();
}

/** Show image `imageId` of the open job: its status until it is done, then its result. */
export async function showImage(imageId) {
  const job = state.job;
  const image = job && job.images.find((im) => im.id === imageId);
  if (!image) return;
  const token = ++state.viewToken;
  const section = $('viewer');
  section.hidden = false;
  section.dataset.imageId = imageId;
  section.dataset.ready = 'false';
  $('viewer-title').textContent = image.filename;
  if (image.status === 'failed') {
    const error = image.error || { code: 'failed', message: 'the image failed' };
    setViewerState('', new ApiError(0, error.code, error.message));
    return;
  }
  if (image.status !== 'done') {
    setViewerState(pendingText(image));
    return;
  }
  setViewerState('Loading the result…');
  let result;
  try {
    result = await getJSON(`/jobs/${job.id}/images/${imageId}/result`);
  } catch (err) {
    if (token === state.viewToken) setViewerState('', err);
    return;
  }
  const file = state.files.get(imageId);
  let raw = await servicePreview(job.id, imageId);
  const fromService = Boolean(raw);
  if (!raw && file) raw = await decodeFile(file);
  if (token !== state.viewToken) return; // another image was chosen meanwhile
  state.view = { raw, stretched: null };
  $('viewer-state').hidden = true;
  $('canvas').hidden = false;
  $('metrics-wrap').hidden = false;
  $('viewer-count').hidden = false;
  $('toolbar').hidden = false;
  $('downloads').hidden = false;
  for (const id of DOWNLOADS) $(id).disabled = false;
  const count = result.objects.length;
  $('object-count').textContent = String(count);
  $('object-word').textContent = count === 1 ? 'object' : 'objects';
  const size = `${result.width} × ${result.height} px`;
  let note;
  if (fromService) note = `Showing ${image.filename} with its ${count} outlines, as the model saw it (auto-contrast) · ${size}.`;
  else if (raw) note = `Showing ${file.name} from this browser with its ${count} outlines · ${size}.`;
  else if (file) note = `This browser cannot display ${file.name} (TIFF); the objects are drawn on a blank canvas of the image's size (${size}).`;
  else note = `The service does not keep originals for viewing, so the objects are drawn on a blank canvas of the image's size (${size}). Choose the original file to see it underneath.`;
  $('viewer-note').textContent = note;
  $('source-pick').hidden = Boolean(raw);
  viewer.show(result, currentBase());
  section.dataset.base = fromService ? 'preview' : raw ? 'file' : 'blank';
  section.dataset.ready = 'true';
  section.dataset.objects = String(count);
}

/** The service's preview of a done image as a canvas, or null (none stored, or unreadable). */
async function servicePreview(jobId, imageId) {
  try {
    return await decodeFile(await getBlob(`/jobs/${jobId}/images/${imageId}/preview.png`, 'image/png'));
  } catch {
    return null; // results stored before previews: the file from this browser, or blank
  }
}

/** The user chose the original of the shown image (a previous job's): draw it underneath. */
async function useSourceFile(file) {
  const imageId = state.selected;
  if (!file || !imageId || !viewer.result) return;
  const raw = await decodeFile(file);
  if (!raw) {
    $('viewer-note').textContent = `This browser cannot display ${file.name}; the objects stay on a blank canvas.`;
    return;
  }
  const { width, height } = viewer.result;
  if (raw.imageWidth !== width || raw.imageHeight !== height) {
    $('viewer-note').textContent = `${file.name} is ${raw.imageWidth} × ${raw.imageHeight} px, but the segmented image was ${width} × ${height} px: not shown.`;
    return;
  }
  state.files.set(imageId, file);
  await showImage(imageId);
}

function stem(filename) {
  return filename.replace(/\.[^.]+$/, '') || 'image';
}

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

async function download(button, path, filename, accept) {
  button.disabled = true;
  try {
    save(await getBlob(path, accept), filename);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

function imageDownload(kind) {
  const job = state.job;
  const image = job && job.images.find((im) => im.id === state.selected);
  if (!image) return;
  const base = `/jobs/${job.id}/images/${image.id}`;
  const name = stem(image.filename);
  if (kind === 'geojson') download($('dl-geojson'), `${base}/result?format=geojson`, `${name}.geojson`, 'application/geo+json');
  if (kind === 'coco') download($('dl-coco'), `${base}/result?format=coco`, `${name}.coco.json`, 'application/json');
  if (kind === 'mask') download($('dl-mask'), `${base}/mask.png`, `${name}.labels.png`, 'image/png');
}

/** The shown image's measurements (the table's columns, one row per object) as CSV. */
function csvDownload() {
  const job = state.job;
  const image = job && job.images.find((im) => im.id === state.selected);
  if (!image || !viewer.result) return;
  const blob = new Blob([measurementsCsv(viewer.result, image.filename)], { type: 'text/csv' });
  save(blob, `${stem(image.filename)}.measurements.csv`);
}

function jobDownload(kind) {
  const job = state.job;
  if (!job) return;
  const name = `job-${job.id.slice(0, 8)}`;
  // one FeatureCollection per image (QuPath imports one per image), zipped
  if (kind === 'geojson') download($('job-geojson'), `/jobs/${job.id}/geojson.zip`, `${name}-geojson.zip`, 'application/zip');
  if (kind === 'coco') download($('job-coco'), `/jobs/${job.id}/results?format=coco`, `${name}.coco.json`, 'application/json');
}

export function initResults() {
  $('dl-geojson').addEventListener('click', () => imageDownload('geojson'));
  $('dl-coco').addEventListener('click', () => imageDownload('coco'));
  $('dl-mask').addEventListener('click', () => imageDownload('mask'));
  $('dl-csv').addEventListener('click', csvDownload);
  $('job-geojson').addEventListener('click', () => jobDownload('geojson'));
  $('job-coco').addEventListener('click', () => jobDownload('coco'));
  for (const id of ['show-fill', 'show-outline']) $(id).addEventListener('change', () => viewer.draw());
  $('auto-contrast').addEventListener('change', () => viewer.setBase(currentBase()));
  $('source-file').addEventListener('change', (e) => {
    useSourceFile(e.target.files[0]);
    e.target.value = '';
  });
}
