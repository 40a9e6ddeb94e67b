// Shared by every page: the REST client, the /ws/jobs/ stream, formatting and the
// confirmation dialog (elements with data-confirm ask before they act).

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && body.error ? body.error : {};
  return new ApiError(
    response.status,
    error.code || "http_" + response.status,
    error.message || response.statusText || "request failed",
    error.details || {},
  );
}

// JSON request to the REST API as the signed-in user; throws ApiError on a 4xx/5xx.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

// Upload one file to /api/uploads with progress; resolves to the upload's record.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/uploads");
    request.setRequestHeader("X-CSRFToken", csrfToken());
    request.setRequestHeader("Accept", "application/json");
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      const body = request.response || {};
      if (request.status === 201) {
        onProgress(1);
        resolve(body);
      } else {
        const error = body.error || {};
        reject(new ApiError(request.status, error.code || "upload_failed",
          error.message || "the upload failed", error.details || {}));
      }
    });
    request.addEventListener("error", () =>
      reject(new ApiError(0, "network", "the upload was interrupted", {})));
    const form = new FormData();
    form.append("file", file);
    request.send(form);
  });
}

// The /ws/jobs/ event stream: subscribes to jobs, answers pings, and on a dropped
// connection reconnects and resubscribes from the last seq it saw of each job.
export class JobStream {
  constructor(onEvent, onMessage) {
    this.onEvent = onEvent;
    this.onMessage = onMessage || (() => {});
    this.seqs = new Map();
    this.socket = null;
    this.retry = 500;
    this.closed = false;
  }

  subscribe(jobId, since) {
    const known = this.seqs.get(jobId);
    this.seqs.set(jobId, known === undefined ? since : Math.max(known, since));
    if (!this.socket) this.open();
    else if (this.socket.readyState === WebSocket.OPEN) this.sendSubscribe(jobId);
  }

  unsubscribe(jobId) {
    if (!this.seqs.delete(jobId)) return;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ action: "unsubscribe", jobId }));
    }
  }

  sendSubscribe(jobId) {
    this.socket.send(JSON.stringify({ action: "subscribe", jobId, since: this.seqs.get(jobId) }));
  }

  open() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retry = 500;
      for (const jobId of this.seqs.keys()) this.sendSubscribe(jobId);
    });
    socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "ping") {
        socket.send(JSON.stringify({ action: "pong" }));
      } else if (data.type === "event") {
        const last = this.seqs.get(data.jobId);
        if (last === undefined || data.seq <= last) return;
        this.seqs.set(data.jobId, data.seq);
        this.onEvent(data);
      } else {
        this.onMessage(data);
      }
    });
    socket.addEventListener("close", (event) => {
      this.socket = null;
      if (this.closed || event.code === 4401 || this.seqs.size === 0) return;
      window.setTimeout(() => {
        if (!this.socket && this.seqs.size) this.open();
      }, this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    });
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close(1000);
  }
}

export const FINISHED = new Set(["completed", "failed", "cancelled"]);

export function durationText(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  if (minutes) return `${minutes}m ${String(rest).padStart(2, "0")}s`;
  return `${rest}s`;
}

export function clockText(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

export function setPill(element, status) {
  element.textContent = status;
  element.className = element.className
    .split(" ")
    .filter((name) => name === "pill" || name.startsWith("pill-"))
    .concat(status)
    .join(" ");
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// Ask before acting: resolves true when the user confirms in the page's dialog.
export function confirmAction(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// Forms with data-confirm submit only after the dialog says yes.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (form.dataset.confirmed === "yes") return;
  event.preventDefault();
  if (await confirmAction(form.dataset.confirm)) {
    form.dataset.confirmed = "yes";
    form.requestSubmit();
  }
});
