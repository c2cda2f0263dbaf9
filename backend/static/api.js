// REST client of the page. Every call sends the API key; every failure becomes an ApiError that
// carries the API's own words: `{"error": {"code", "message", ...}}` and the HTTP status.

const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0 when the service could not be reached
    this.code = code;
    this.details = details;
  }
}

let apiKey = '';

export function setKey(key) {
  apiKey = key;
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${apiKey}`, ...extra };
}

/** The ApiError for an answer with status `status` and parsed JSON body `body` (or null). */
export function errorFrom(status, body, statusText = '') {
  const err = body && typeof body === 'object' ? body.error : null;
  if (err && typeof err === 'object') {
    const { code, message, ...details } = err;
    return new ApiError(status, String(code || `http_${status}`),
      String(message || statusText || `HTTP ${status}`), details);
  }
  const text = statusText ? `${status} ${statusText}` : `HTTP ${status}`;
  return new ApiError(status, `http_${status}`, `the service answered ${text}`);
}

function unreachable() {
  return new ApiError(0, 'network_error',
    'cannot reach the service; check your connection and try again');
}

async function request(path, { method = 'GET', accept = 'application/json' } = {}) {
  let res;
  try {
    res = await fetch(BASE + path, { method, headers: authHeaders({ Accept: accept }), cache: 'no-store' });
  } catch {
    throw unreachable();
  }
  if (!res.ok) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    throw errorFrom(res.status, body, res.statusText);
  }
  return res;
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export async function deleteJSON(path) {
  return (await request(path, { method: 'DELETE' })).json();
}

export async function getBlob(path, accept = '*/*') {
  return (await request(path, { accept })).blob();
}

/**
 * POST /jobs (multipart) with upload progress: resolves with the 202 body.
 * @param {File[]} files
 * @param {{model: string, threshold: string, min_area: string, split?: string, diameter?: string}} params
 * @param {(fraction: number) => void} onProgress
 */
export function createJob(files, params, onProgress) {
  const form = new FormData();
  for (const [name, value] of Object.entries(params)) form.append(name, value);
  for (const file of files) form.append('files', file, file.name);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${BASE}/jobs`);
    for (const [name, value] of Object.entries(authHeaders({ Accept: 'application/json' }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) resolve(body);
      else reject(errorFrom(xhr.status, body, xhr.statusText));
    };
    xhr.onerror = () => reject(unreachable());
    xhr.send(form);
  });
}
