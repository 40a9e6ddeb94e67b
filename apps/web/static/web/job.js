// Job page: the graph laid out by dependency (dagre) and drawn as SVG, each node
// coloured by its state with its own progress bar and ETA; a live event log; the
// script, previews, players and downloads as they arrive; Cancel and Retry.
//
// The page loads the job from GET /api/jobs/{id} (graph with live node states,
// artifacts, lastSeq), then follows /ws/jobs/ from seq 0: events up to lastSeq only
// fill the log, later ones move the graph. After events that change outputs (a node
// done or failed, an artifact stored, the job finished) it reloads the job once.
import { BOX, drawGraph } from "./dag.js";
import {
  FINISHED, JobStream, api, clockText, confirmAction, durationText, element, setPill,
} from "./common.js";

const root = document.getElementById("job");
const jobId = root.dataset.jobId;
const nodes = new Map(); // node id -> {name, service, state, progress, startedAt, error, output, el}
const artifactsShown = new Set();
// Poster URLs by the node that made them: a player and its poster load in parallel, and
// whichever arrives second puts the poster on the player (see applyPoster).
const posters = new Map();
let appliedSeq = 0;
let refreshTimer = null;

// --- The graph -----------------------------------------------------------------------

function showGraph(graph) {
  const holder = document.getElementById("dag");
  const groups = drawGraph(holder, graph, "The job's steps, laid out by dependency");
  for (const [id, group] of groups) nodes.get(id).el = group;
  for (const id of nodes.keys()) paintNode(id);
}

function etaText(node) {
  if (node.state !== "running" || !node.startedAt || !(node.progress > 0.02)) return "";
  const elapsed = (Date.now() - new Date(node.startedAt)) / 1000;
  return `ETA ${durationText((elapsed / node.progress) * (1 - node.progress))}`;
}

function paintNode(id) {
  const node = nodes.get(id);
  if (!node.el) return;
  const shown = node.state === "completed" ? 1 : node.progress || 0;
  node.el.setAttribute("class", `node ${node.state}`);
  node.el.dataset.state = node.state;
  const bar = node.el.querySelector(".bar");
  bar.setAttribute("width", ((BOX.width - 24) * Math.min(1, Math.max(0, shown))).toFixed(1));
  const parts = [node.state];
  if (node.state === "running") parts.push(`${Math.round(shown * 100)}%`);
  const eta = etaText(node);
  if (eta) parts.push(eta);
  if (node.state === "failed" && node.error) parts.push(node.error.code || "error");
  node.el.querySelector(".detail").textContent = parts.join(" · ");
  const label = `${node.name}: ${parts.join(", ")}`;
  node.el.setAttribute("aria-label", label);
  node.el.querySelector("title").textContent =
    node.error ? `${label}\n${node.error.message || ""}` : `${label} (${serviceText(node)})`;
}

// What the original system called a node's service, when its document named it so
// (graph metadata.original, keyed by node id; own keys only, as ids like __proto__ exist).
function originalService(graph, nodeId) {
  const records = graph.metadata && graph.metadata.original && graph.metadata.original.nodes;
  if (!records || typeof records !== "object" || !Object.hasOwn(records, nodeId)) return "";
  const record = records[nodeId];
  return record && typeof record.service === "string" ? record.service : "";
}

function serviceText(node) {
  return node.originalService ? `${node.service}, the original's ${node.originalService}` : node.service;
}

// --- Job state, errors, results ------------------------------------------------------

function showJob(status, progress) {
  root.dataset.status = status;
  setPill(document.getElementById("job-status"), status);
  document.getElementById("job-progress").value = progress;
  document.getElementById("cancel-button").hidden = FINISHED.has(status);
  document.getElementById("retry-button").hidden = !(status === "failed" || status === "cancelled");
}

function showErrors(job) {
  const box = document.getElementById("job-error");
  const failed = [...nodes.entries()].filter(([, node]) => node.state === "failed" && node.error);
  box.replaceChildren();
  if (!failed.length && !job.error) {
    box.hidden = true;
    return;
  }
  box.append(element("h2", { text: "What went wrong" }));
  for (const [id, node] of failed) {
    box.append(element("p", {},
      element("strong", { text: `${node.name} (${id}) ` }),
      element("code", { text: node.error.code || "error" }),
      document.createTextNode(` ${node.error.message || ""}`)));
  }
  if (!failed.length && job.error) {
    box.append(element("p", {}, element("code", { text: job.error.code || "error" }),
      document.createTextNode(` ${job.error.message || ""}`)));
  }
  box.hidden = false;
}

function showScript() {
  for (const node of nodes.values()) {
    const output = node.output || {};
    if (typeof output.narration === "string" && output.narration) {
      document.getElementById("script-title").textContent = output.title || "";
      document.getElementById("script-text").textContent = output.narration;
      document.getElementById("script").hidden = false;
      return;
    }
  }
}

function sizeText(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} kB`;
  return `${bytes} B`;
}

// Services whose images are frames of a clip: they stay in the downloads, the clip plays.
const FRAME_SERVICES = new Set(["video.animate", "video.upscale"]);

function previewCaption(artifact, owner) {
  const step = /^sample-0*(\d+)\.png$/.exec(artifact.name || "");
  if (step && owner && owner.service === "lora.train") return `Sample at step ${step[1]}`;
  return artifact.name || artifact.key;
}

// Previews are grouped by the step that made them (LoRA samples, keyframes, ...), each
// group in the order its images arrived.
function previewGroup(nodeId, owner, from) {
  const box = document.getElementById("previews");
  const key = nodeId || "upload";
  let group = box.querySelector(`[data-node-id="${CSS.escape(key)}"] .previews`);
  if (!group) {
    group = element("div", { class: "previews" });
    const title = owner && owner.service === "lora.train" ? `${from}: samples` : from;
    box.append(element("section", { class: "preview-group", "data-node-id": key },
      element("h3", { text: title }), group));
  }
  return group;
}

// The poster of a node's video goes on that node's players, whether the players or
// the poster's URL came first.
function applyPoster(nodeId) {
  const url = posters.get(nodeId);
  if (!url) return;
  document.querySelectorAll("#players video").forEach((video) => {
    if (video.dataset.nodeId === nodeId) video.poster = url;
  });
}

async function showArtifact(artifact) {
  if (artifactsShown.has(artifact.id)) return;
  artifactsShown.add(artifact.id);
  const owner = nodes.get(artifact.node_id);
  const from = owner ? owner.name : artifact.node_id || "upload";
  const downloads = document.getElementById("downloads");
  downloads.querySelector(".empty-note")?.remove();
  const link = element("a", { href: `/api/artifacts/${artifact.id}/download`, text: artifact.name || artifact.key });
  downloads.append(element("li", {}, link,
    element("span", { class: "muted small", text: ` ${from} · ${artifact.content_type} · ${sizeText(artifact.size_bytes)}` })));
  const type = artifact.content_type || "";
  if (!/^(image|audio|video)\//.test(type)) return;
  let image = null;
  if (type.startsWith("image/")) {
    if (owner && FRAME_SERVICES.has(owner.service)) return;
    // Placed now, so that the images keep their order while their links load.
    const caption = previewCaption(artifact, owner);
    image = element("img", { alt: `${caption} from ${from}`, loading: "lazy", "data-artifact-id": artifact.id });
    previewGroup(artifact.node_id, owner, from).append(element("figure", {}, image,
      element("figcaption", { text: caption })));
  }
  const { url } = await api("GET", `/api/artifacts/${artifact.id}`);
  if (type.startsWith("video/")) {
    const stepClip = Boolean(owner && owner.service !== "video.compose");
    // A step's clip has no poster of its own: the media fragment makes the player show
    // its first frame instead of black.
    const video = element("video", { controls: true, preload: "metadata",
      src: stepClip ? `${url}#t=0.001` : url, playsinline: true,
      "aria-label": `Video from ${from}`, "data-artifact-id": artifact.id,
      "data-node-id": artifact.node_id || "" });
    const figure = element("figure", { class: stepClip ? "step-clip" : null }, video,
      element("figcaption", { text: `${artifact.name} · ${from}` }));
    // The composed video leads; clips of earlier steps (the talking head, an animated
    // keyframe) follow the videos already shown, small, ahead of the audio players.
    const players = document.getElementById("players");
    const lastVideo = [...players.children].filter((child) => child.querySelector("video")).pop();
    if (stepClip && lastVideo) {
      lastVideo.after(figure);
    } else {
      players.prepend(figure);
    }
    applyPoster(video.dataset.nodeId);
  } else if (type.startsWith("audio/")) {
    const audio = element("audio", { controls: true, preload: "metadata", src: url,
      "aria-label": `${artifact.name} from ${from}`, "data-artifact-id": artifact.id });
    document.getElementById("players").append(element("figure", {}, audio,
      element("figcaption", { text: audioCaption(artifact.name, from, owner),
        "data-audio-of": artifact.node_id || "", "data-name": artifact.name || "" })));
  } else {
    image.src = url;
    if (artifact.name === "poster.jpg") {
      posters.set(artifact.node_id || "", url);
      applyPoster(artifact.node_id || "");
    }
  }
}

// A narration says which engine spoke it (tts.speak's piper or espeak, or the GPU
// cloning engine of tts.clone).
function audioCaption(name, from, owner) {
  const engine = owner && owner.output && owner.output.engine;
  return engine ? `${name} · ${from} · spoken by ${engine}` : `${name} · ${from}`;
}

function captionAudio(nodeId) {
  const owner = nodes.get(nodeId);
  document.querySelectorAll("#players figcaption[data-audio-of]").forEach((caption) => {
    if (caption.dataset.audioOf === nodeId) {
      caption.textContent = audioCaption(caption.dataset.name, owner ? owner.name : nodeId, owner);
    }
  });
}

function applySnapshot(job) {
  for (const node of job.graph.nodes) {
    const known = nodes.get(node.id) || {};
    const telemetry = node.telemetry || {};
    const fresh = {
      ...known,
      name: node.name || node.id,
      service: node.service,
      originalService: originalService(job.graph, node.id),
      output: node.output,
      error: node.error,
    };
    if (job.lastSeq >= appliedSeq) {
      fresh.state = telemetry.state || node.status;
      fresh.progress = telemetry.progress || 0;
      fresh.startedAt = telemetry.startedAt;
    }
    nodes.set(node.id, fresh);
  }
  if (job.lastSeq >= appliedSeq) {
    appliedSeq = job.lastSeq;
    showJob(job.status, job.progress);
  }
  for (const id of nodes.keys()) {
    paintNode(id);
    captionAudio(id);
  }
  showErrors(job);
  showScript();
  return Promise.all(job.artifacts.map(showArtifact));
}

async function refresh() {
  refreshTimer = null;
  applySnapshot(await api("GET", `/api/jobs/${jobId}`));
}

function showProblem(text) {
  const box = document.getElementById("action-error");
  box.textContent = text;
  box.hidden = false;
}

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = window.setTimeout(() => {
    refresh().catch((error) => showProblem(`The job could not be reloaded: ${error.message}`));
  }, 250);
}

// --- Events ------------------------------------------------------------------------

function logLine(event) {
  const payload = event.payload || {};
  let detail = "";
  if (payload.message) detail = payload.message;
  else if (event.event === "node.progress") detail = `${Math.round((payload.progress || 0) * 100)}%`;
  else if (payload.error) detail = `${payload.error.code}: ${payload.error.message}`;
  else if (payload.name) detail = payload.name;
  else if (payload.worker) detail = payload.worker;
  const owner = event.nodeId && nodes.get(event.nodeId);
  const line = element("li", { class: `log ${event.event.replace(".", "-")}`, "data-seq": event.seq },
    element("time", { datetime: event.timestamp, text: clockText(event.timestamp) }),
    element("span", { class: "event", text: event.event }),
    owner ? element("span", { class: "node-name", text: owner.name }) : null,
    detail ? element("span", { class: "detail", text: detail }) : null);
  const log = document.getElementById("event-log");
  log.append(line);
  log.scrollTop = log.scrollHeight;
}

function onEvent(event) {
  logLine(event);
  if (event.seq <= appliedSeq) return; // already in the loaded snapshot
  appliedSeq = event.seq;
  const node = event.nodeId ? nodes.get(event.nodeId) : null;
  if (node && event.nodeStatus) {
    node.state = event.nodeStatus;
    const payload = event.payload || {};
    if (event.event === "node.started") {
      node.startedAt = event.timestamp;
      node.progress = 0;
      node.error = null;
    } else if (event.event === "node.progress") {
      node.progress = payload.progress;
    } else if (event.event === "node.queued" || event.event === "node.retrying") {
      node.progress = 0;
    } else if (event.event === "node.failed") {
      node.error = payload.error || null;
    }
    paintNode(event.nodeId);
  }
  showJob(event.status, event.progress);
  if (/^(node\.(completed|cached|failed)|artifact\.stored|job\.)/.test(event.event)) scheduleRefresh();
}

// --- Actions -------------------------------------------------------------------------

async function act(button, path) {
  if (!(await confirmAction(button.dataset.confirm))) return;
  const box = document.getElementById("action-error");
  box.hidden = true;
  button.disabled = true;
  try {
    const job = await api("POST", path);
    showJob(job.status, job.progress);
    scheduleRefresh();
  } catch (error) {
    showProblem(`${error.message} (${error.code})`);
  } finally {
    button.disabled = false;
  }
}

document.getElementById("cancel-button").addEventListener("click", (event) =>
  act(event.currentTarget, `/api/jobs/${jobId}/cancel`));
document.getElementById("retry-button").addEventListener("click", (event) =>
  act(event.currentTarget, `/api/jobs/${jobId}/retry`));

async function start() {
  const job = await api("GET", `/api/jobs/${jobId}`);
  for (const node of job.graph.nodes) {
    nodes.set(node.id, {
      name: node.name || node.id,
      service: node.service,
      originalService: originalService(job.graph, node.id),
    });
  }
  showGraph(job.graph);
  await applySnapshot(job);
  new JobStream(onEvent).subscribe(jobId, 0);
  window.setInterval(() => {
    for (const [id, node] of nodes) if (node.state === "running") paintNode(id);
  }, 1000);
}

start().catch((error) => showProblem(`The job could not be loaded: ${error.message}`));
