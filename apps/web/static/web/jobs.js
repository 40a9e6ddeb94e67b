// Jobs list: each unfinished job on the page follows its events over /ws/jobs/ and
// updates its status pill, progress bar, times and duration without a reload.
import { FINISHED, JobStream, clockText, durationText, setPill } from "./common.js";

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
