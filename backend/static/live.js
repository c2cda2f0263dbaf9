// Live progress: Socket.IO events when connected, REST polling otherwise.
//
// The REST state is the truth and events are a live view of it, so the open job is also
// re-read now and then while events flow (a safety net), at once after a reconnect, and
// every POLL_OFFLINE_MS while the socket is down.

const POLL_OFFLINE_MS = 1000;
const POLL_LIVE_MS = 5000;

export const EVENTS = ['image.update', 'job.progress', 'job.done'];

export class Live {
  /**
   * @param {object} handlers
   * @param {(event: string, data: object) => void} handlers.onEvent
   * @param {(state: 'connecting'|'live'|'polling'|'refused'|'off', detail?: string) => void} handlers.onState
   * @param {() => Promise<boolean>} handlers.poll re-read the open job; resolves true while it
   *   still has work pending (keep polling), false once it is over
   */
  constructor({ onEvent, onState, poll }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.poll = poll;
    this.socket = null;
    this.jobId = null;
    this.timer = null;
  }

  get connected() {
    return Boolean(this.socket && this.socket.connected);
  }

  connect(key) {
    this.close();
    if (!key) {
      this.onState('off');
      return;
    }
    if (typeof window.io !== 'function') {
      this.onState('polling', 'the Socket.IO client did not load');
      return;
    }
    const socket = window.io({
      path: '/socket.io',
      auth: { token: key },
      reconnectionDelay: 1000,
      reconnectionDelayMax: 10000,
    });
    socket.on('connect', () => {
      this.onState('live');
      if (this.jobId) this.subscribe(this.jobId);
      this.schedule(0); // catch up on anything missed while disconnected
    });
    socket.on('disconnect', (reason) => {
      this.onState('polling', reason);
      this.schedule(0);
    });
    socket.on('connect_error', (err) => {
      // a refusal by the server (bad key) is final: socket.active turns false
      this.onState(socket.active ? 'polling' : 'refused', err && err.message);
    });
    for (const name of EVENTS) socket.on(name, (data) => this.onEvent(name, data));
    this.socket = socket;
    this.onState('connecting');
  }

  close() {
    if (this.socket) {
      this.socket.removeAllListeners();
      this.socket.disconnect();
      this.socket = null;
    }
    this.stop();
  }

  /** Follow `jobId` (join its room, poll it until it is over). */
  follow(jobId) {
    this.jobId = jobId;
    if (this.connected) this.subscribe(jobId);
    this.schedule(this.connected ? POLL_LIVE_MS : POLL_OFFLINE_MS);
  }

  unfollow() {
    this.jobId = null;
    this.stop();
  }

  subscribe(jobId) {
    this.socket.emit('subscribe', { job_id: jobId });
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  schedule(delay) {
    this.stop();
    if (!this.jobId) return;
    const jobId = this.jobId;
    this.timer = setTimeout(async () => {
      let pending = true;
      try {
        pending = await this.poll();
      } catch {
        pending = true; // shown by the caller; keep trying
      }
      if (pending && this.jobId === jobId) {
        this.schedule(this.connected ? POLL_LIVE_MS : POLL_OFFLINE_MS);
      }
    }, delay);
  }
}
