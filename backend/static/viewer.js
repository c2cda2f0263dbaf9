// The result viewer: the image (or a blank canvas of its size) with every object's polygon drawn
// over it, holes included (even-odd fill), and a sortable table of per-object measurements.
// Hovering or clicking an object on the canvas or its row in the table highlights both.
//
// Coordinates are the API's: pixel (row r, column c) covers [c, c+1) x [r, r+1), so a polygon
// drawn on a canvas of the image's size in image units lands exactly on its pixels.

const METRICS = [
  ['area', 'Area', 0],
  ['perimeter', 'Perimeter', 1],
  ['circularity', 'Circularity', 3],
  ['equivalent_diameter', 'Eq. diameter', 1],
  ['feret_max', 'Feret max', 1],
  ['feret_min', 'Feret min', 1],
  ['solidity', 'Solidity', 3],
  ['eccentricity', 'Eccentricity', 3],
];
const MAX_ROWS = 2000;
const MAX_BASE_SIDE = 4096;
const LOW_PERCENTILE = 0.01;
const HIGH_PERCENTILE = 0.998;

function hue(id) {
  return (id * 137.508) % 360;
}

function objectPath(obj) {
  const path = new Path2D();
  for (const ring of [obj.polygon, ...(obj.holes || [])]) {
    if (!ring || ring.length === 0) continue;
    path.moveTo(ring[0][0], ring[0][1]);
    for (let i = 1; i < ring.length; i += 1) path.lineTo(ring[i][0], ring[i][1]);
    path.closePath();
  }
  return path;
}

/**
 * Decode an image file into a canvas (at most MAX_BASE_SIDE px a side; its `imageWidth` and
 * `imageHeight` are the file's own), or null when the browser cannot decode it (TIFF in most
 * browsers).
 */
export async function decodeFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null;
  }
  const scale = Math.min(1, MAX_BASE_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  canvas.imageWidth = bitmap.width;
  canvas.imageHeight = bitmap.height;
  bitmap.close();
  return canvas;
}

/**
 * A copy of `source` with its grey levels stretched so the LOW..HIGH percentiles of the
 * luminance span 0..255 (microscopy images are often dim: 12-bit data in 16-bit files).
 */
export function stretchContrast(source) {
  const canvas = document.createElement('canvas');
  canvas.width = source.width;
  canvas.height = source.height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0);
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const px = image.data;
  const histogram = new Uint32Array(256);
  for (let i = 0; i < px.length; i += 4) {
    histogram[(px[i] * 77 + px[i + 1] * 150 + px[i + 2] * 29) >> 8] += 1;
  }
  const n = px.length / 4;
  let lo = 0;
  let hi = 255;
  for (let v = 0, seen = 0; v < 256; v += 1) {
    seen += histogram[v];
    if (seen > n * LOW_PERCENTILE) { lo = v; break; }
  }
  for (let v = 255, seen = 0; v >= 0; v -= 1) {
    seen += histogram[v];
    if (seen > n * (1 - HIGH_PERCENTILE)) { hi = v; break; }
  }
  if (hi - lo < 2 || (lo === 0 && hi === 255)) return source;
  const lut = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v += 1) lut[v] = ((v - lo) * 255) / (hi - lo);
  for (let i = 0; i < px.length; i += 4) {
    px[i] = lut[px[i]];
    px[i + 1] = lut[px[i + 1]];
    px[i + 2] = lut[px[i + 2]];
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function csvCell(value) {
  const text = value == null ? '' : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The measurements of `result` (the API's JSON result) as CSV: one row per object, the
 * columns of the table (pixels), with the image's file name and the object's centroid. */
export function measurementsCsv(result, filename) {
  const head = ['image', 'object', ...METRICS.map(([m]) => m), 'holes', 'centroid_x', 'centroid_y'];
  const rows = [head.join(',')];
  for (const obj of result.objects || []) {
    const m = obj.metrics || {};
    const [cx, cy] = obj.centroid || [null, null];
    rows.push([filename, obj.id, ...METRICS.map(([k]) => m[k]), (obj.holes || []).length, cx, cy]
      .map(csvCell).join(','));
  }
  return `${rows.join('\n')}\n`;
}

export class Viewer {
  constructor({ canvas, stage, table, tableNote, options, onFocus }) {
    this.onFocus = onFocus || (() => {}); // called with the hovered (else selected) object or null
    this.canvas = canvas;
    this.stage = stage;
    this.table = table;
    this.tableNote = tableNote;
    this.options = options; // {fill, outline} checkboxes
    this.result = null;
    this.objects = [];
    this.base = null;
    this.hovered = null;
    this.selected = null;
    this.sort = { key: 'id', dir: 1 };
    this.hitCtx = document.createElement('canvas').getContext('2d');
    new ResizeObserver(() => this.draw()).observe(stage);
    canvas.addEventListener('mousemove', (e) => this.setHovered(this.objectAt(e)));
    canvas.addEventListener('mouseleave', () => this.setHovered(null));
    canvas.addEventListener('click', (e) => this.setSelected(this.objectAt(e), true));
    table.tHead.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-key]');
      if (!button) return;
      const key = button.dataset.key;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
      this.renderTable();
    });
    table.tBodies[0].addEventListener('mouseover', (e) => {
      const row = e.target.closest('tr[data-id]');
      this.setHovered(row ? Number(row.dataset.id) : null);
    });
    table.tBodies[0].addEventListener('mouseleave', () => this.setHovered(null));
    table.tBodies[0].addEventListener('focusin', (e) => {
      const row = e.target.closest('tr[data-id]');
      if (row) this.setHovered(Number(row.dataset.id));
    });
    table.tBodies[0].addEventListener('focusout', () => this.setHovered(null));
    table.tBodies[0].addEventListener('click', (e) => {
      const row = e.target.closest('tr[data-id]');
      if (row) this.setSelected(Number(row.dataset.id), false);
    });
    table.tBodies[0].addEventListener('keydown', (e) => {
      const row = e.target.closest('tr[data-id]');
      if (row && (e.key === 'Enter' || e.key === ' ')) {
        e.preventDefault();
        this.setSelected(Number(row.dataset.id), false);
      }
    });
  }

  /** Show `result` (the API's JSON result) over `base` (a canvas of the image, or null). */
  show(result, base) {
    this.result = result;
    this.base = base;
    this.hovered = null;
    this.selected = null;
    this.objects = (result.objects || []).map((obj) => ({ ...obj, path: objectPath(obj) }));
    this.renderTable();
    this.draw();
  }

  setBase(base) {
    this.base = base;
    this.draw();
  }

  clear() {
    this.result = null;
    this.objects = [];
    this.base = null;
    this.table.tHead.replaceChildren();
    this.table.tBodies[0].replaceChildren();
    this.tableNote.textContent = '';
    this.hovered = null;
    this.selected = null;
    this.onFocus(null);
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Display size: the image scaled to the stage's width and at most 70 % of the window. */
  layout() {
    const { width, height } = this.result;
    const maxW = Math.max(100, this.stage.clientWidth);
    const maxH = Math.max(200, window.innerHeight * 0.7);
    const scale = Math.min(maxW / width, maxH / height, 8);
    return { cssW: Math.max(1, Math.floor(width * scale)), cssH: Math.max(1, Math.floor(height * scale)), scale };
  }

  draw() {
    if (!this.result) return;
    const { cssW, cssH, scale } = this.layout();
    const dpr = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH}px`;
    const backingW = Math.round(cssW * dpr);
    const backingH = Math.round(cssH * dpr);
    if (canvas.width !== backingW || canvas.height !== backingH) {
      canvas.width = backingW;
      canvas.height = backingH;
    }
    const k = scale * dpr; // backing pixels per image pixel
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = this.base ? '#000000' : '#1c2637'; // blank: lighter than the stage
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (this.base) {
      ctx.imageSmoothingEnabled = k < 2; // show the pixels when zoomed in
      ctx.drawImage(this.base, 0, 0, canvas.width, canvas.height);
    }
    ctx.setTransform(k, 0, 0, k, 0, 0);
    const fillAlpha = this.base ? 0.28 : 0.6;
    const fill = this.options.fill.checked;
    const outline = this.options.outline.checked;
    for (const obj of this.objects) {
      const h = hue(obj.id);
      if (fill) {
        ctx.fillStyle = `hsl(${h} 90% 60% / ${fillAlpha})`;
        ctx.fill(obj.path, 'evenodd');
      }
      if (outline) {
        ctx.lineWidth = 1.5 / k;
        ctx.strokeStyle = `hsl(${h} 95% 65%)`;
        ctx.stroke(obj.path);
      }
    }
    for (const id of new Set([this.selected, this.hovered])) {
      const obj = id == null ? null : this.objects.find((o) => o.id === id);
      if (!obj) continue;
      ctx.fillStyle = 'rgb(255 255 255 / 0.35)';
      ctx.fill(obj.path, 'evenodd');
      ctx.lineWidth = 3 / k;
      ctx.strokeStyle = id === this.selected ? '#facc15' : '#ffffff';
      ctx.stroke(obj.path);
    }
  }

  objectAt(event) {
    if (!this.result) return null;
    const { scale } = this.layout();
    const x = event.offsetX / scale;
    const y = event.offsetY / scale;
    for (let i = this.objects.length - 1; i >= 0; i -= 1) {
      const obj = this.objects[i];
      const [x0, y0, x1, y1] = obj.bbox || [-Infinity, -Infinity, Infinity, Infinity];
      if (x < x0 - 1 || x > x1 + 1 || y < y0 - 1 || y > y1 + 1) continue;
      if (this.hitCtx.isPointInPath(obj.path, x, y, 'evenodd')) return obj.id;
    }
    return null;
  }

  setHovered(id) {
    if (id === this.hovered) return;
    this.hovered = id;
    this.canvas.style.cursor = id == null ? 'default' : 'pointer';
    this.markRows();
    this.draw();
  }

  setSelected(id, scroll) {
    this.selected = id === this.selected ? null : id;
    this.markRows();
    this.draw();
    if (scroll && this.selected != null) {
      const row = this.table.tBodies[0].querySelector(`tr[data-id="${this.selected}"]`);
      if (row) row.scrollIntoView({ block: 'nearest' });
    }
  }

  markRows() {
    const id = this.hovered ?? this.selected;
    this.onFocus(id == null ? null : this.objects.find((o) => o.id === id) || null);
    for (const row of this.table.tBodies[0].rows) {
      const id = Number(row.dataset.id);
      row.classList.toggle('hovered', id === this.hovered);
      row.setAttribute('aria-selected', String(id === this.selected));
    }
  }

  renderTable() {
    const { key, dir } = this.sort;
    const head = document.createElement('tr');
    for (const [k, label] of [['id', 'Object'], ...METRICS.map(([m, l]) => [m, l]), ['holes', 'Holes']]) {
      const th = document.createElement('th');
      th.scope = 'col';
      if (k === key) th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.key = k;
      button.textContent = label;
      th.append(button);
      head.append(th);
    }
    this.table.tHead.replaceChildren(head);
    const value = (obj, k) => {
      if (k === 'id') return obj.id;
      if (k === 'holes') return (obj.holes || []).length;
      return obj.metrics ? obj.metrics[k] : null;
    };
    const rows = [...this.objects].sort((a, b) => dir * ((value(a, key) ?? -Infinity) - (value(b, key) ?? -Infinity)));
    const body = document.createDocumentFragment();
    for (const obj of rows.slice(0, MAX_ROWS)) {
      const tr = document.createElement('tr');
      tr.dataset.id = String(obj.id);
      tr.tabIndex = 0;
      const idCell = document.createElement('th');
      idCell.scope = 'row';
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = `hsl(${hue(obj.id)} 90% 55%)`;
      idCell.append(swatch, String(obj.id));
      tr.append(idCell);
      for (const [m, , digits] of METRICS) {
        const td = document.createElement('td');
        const v = obj.metrics ? obj.metrics[m] : null;
        td.textContent = typeof v === 'number' ? v.toFixed(digits) : '–';
        tr.append(td);
      }
      const holes = document.createElement('td');
      holes.textContent = String((obj.holes || []).length);
      tr.append(holes);
      body.append(tr);
    }
    this.table.tBodies[0].replaceChildren(body);
    this.tableNote.textContent = rows.length > MAX_ROWS
      ? `Showing ${MAX_ROWS} of ${rows.length} objects; download GeoJSON or COCO for all of them.`
      : '';
    this.markRows();
  }
}
