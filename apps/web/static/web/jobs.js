// Jobs list: each unfinished job on the page follows its events over /ws/jobs/ and
// updates its status pill, progress bar, times and duration without a reload. On the
// first page, a job submitted elsewhere (another tab, the API) brings in a fresh table.
import { FINISHED, JobStream, api, clockText, durationText, setPill } from "./common.js";

const NEW_JOB_CHECK_MS = 5000;

const rows = new Map();

function rowParts(row) {
  return {
    status: row.querySelector('[data-role="status"]'),
    progress: row.querySelector('[data-role="progress"]'),
    started: row.querySelector('[data-role="started"]'),
    finished: row.querySelector('[data-role="finished"]'),
    duration: row.querySelector('[data-role="duration"]'),
  };
}

function showDuration(row) {
  const started = row.dataset.started;
  if (!started) return;
  const end = row.dataset.finished ? new Date(row.dataset.finished) : new Date();
  rowParts(row).duration.textContent = durationText((end - new Date(started)) / 1000);
}

const stream = new JobStream((event) => {
  const row = rows.get(event.jobId);
  if (!row) return;
  const parts = rowParts(row);
  row.dataset.status = event.status;
  setPill(parts.status, event.status);
  parts.progress.value = event.progress;
  if (event.event === "job.started" || (!row.dataset.started && event.event === "node.started")) {
    row.dataset.started = event.timestamp;
    parts.started.textContent = clockText(event.timestamp);
  }
  if (event.event === "job.queued" && event.payload && event.payload.retry) {
    row.dataset.finished = "";
    parts.finished.textContent = "—";
  }
  if (FINISHED.has(event.status) && event.event.startsWith("job.")) {
    row.dataset.finished = event.timestamp;
    parts.finished.textContent = clockText(event.timestamp);
  }
  showDuration(row);
});

function follow() {
  const seen = new Set();
  for (const row of document.querySelectorAll(".job-row")) {
    const jobId = row.dataset.jobId;
    seen.add(jobId);
    rows.set(jobId, row);
    if (!FINISHED.has(row.dataset.status)) stream.subscribe(jobId, Number(row.dataset.seq));
  }
  for (const jobId of [...rows.keys()]) {
    if (!seen.has(jobId)) {
      rows.delete(jobId);
      stream.unsubscribe(jobId);
    }
  }
}

follow();
// A new page or filter arrives through htmx: follow the jobs it shows.
document.body.addEventListener("htmx:afterSwap", follow);
window.setInterval(() => {
  for (const row of rows.values()) if (row.dataset.started && !row.dataset.finished) showDuration(row);
}, 1000);

// The newest job of the current filter; when the first page does not show it, reload
// the table through htmx (the rows above keep following their jobs).
async function checkForNewJobs() {
  const query = new URLSearchParams(window.location.search);
  if ((query.get("page") || "1") !== "1" || document.visibilityState !== "visible") return;
  const status = query.get("status");
  const newest = await api("GET", `/api/jobs?limit=1${status ? `&status=${status}` : ""}`);
  const job = newest.jobs[0];
  if (job && !rows.has(job.id)) {
    window.htmx.ajax("GET", window.location.pathname + window.location.search, { target: "#jobs-table" });
  }
}
window.setInterval(() => {
  checkForNewJobs().catch((error) => console.warn("could not check for new jobs:", error.message));
}, NEW_JOB_CHECK_MS);
