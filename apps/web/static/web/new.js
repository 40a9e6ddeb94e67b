// New video: pipelines from /api/templates (the ones no worker can run are shown
// disabled with the reason), files checked and previewed here then uploaded to
// /api/uploads with progress, an "Advanced" section generated from the pipeline's
// parameter schemas, and the job submitted to /api/jobs.
//
// A pipeline with an identity LoRA step (lora.train) takes 5–60 photos instead of one
// portrait. With a voice profile chosen, the pipeline's voice.build_profile step is left
// out and the steps after it get the profile as their profile_id input; with a LoRA
// profile chosen, the lora.train step gets it as params.profile_id and no photos, so it
// trains nothing and hands on that profile's LoRA. Either way the page posts that graph
// (the template's own document, embedded in the page) instead of the template.
//
// Above the form, "Describe the video" (describe.js) plans a graph from a request, with
// the files chosen here as its inputs. Below it, a ComfyUI workflow and its sidecar can
// be added as a pipeline of the user's own (POST /api/templates), listed with the others
// and deleted from there.
import { api, confirmAction, element, upload } from "./common.js";
import { setupDescribe } from "./describe.js";
import { LORA_SERVICE, withProfiles } from "./reuse.js";

const data = JSON.parse(document.getElementById("page-data").textContent);
const form = document.getElementById("new-video");
const errorBox = document.getElementById("form-error");
const HIDDEN_FIELDS = new Set(["topic", "narration", "profile_id"]); // set by the form itself
let templates = [];
const uploaded = new Map(); // File -> upload id

// --- Pipelines ----------------------------------------------------------------------

function selectedTemplate() {
  const checked = form.querySelector('input[name="pipeline"]:checked');
  return checked ? templates.find((t) => t.name === checked.value) : null;
}

function trainsLora(template) {
  return Boolean(template) && template.nodes.some((n) => n.service === LORA_SERVICE);
}

function renderPipelines() {
  const box = document.getElementById("pipelines");
  box.replaceChildren();
  const wanted = data.profileKind === "lora" ? (t) => trainsLora(t) : (t) => t.name === "quick";
  const preferred = templates.find((t) => t.available && wanted(t)) || templates.find((t) => t.available);
  for (const template of templates) {
    const id = `pipeline-${template.name}`;
    const input = element("input", {
      type: "radio", name: "pipeline", id, value: template.name,
      disabled: !template.available, checked: template === preferred,
      "aria-describedby": `${id}-about`,
    });
    const about = element("span", { id: `${id}-about`, class: "small muted",
      text: template.available ? template.description : `Unavailable: ${template.unavailableReason}.` });
    box.append(element("label", { class: `pipeline${template.available ? "" : " disabled"}`, for: id },
      input, element("span", { class: "pipeline-text" }, element("strong", { text: template.label }), about)));
    if (template.id) {
      box.append(element("button", { type: "button", class: "button small danger", "data-delete-template": template.id,
        "aria-label": `Delete the pipeline ${template.label}`, text: "Delete" }));
    }
  }
  if (!preferred) {
    box.append(element("p", { class: "error-box", role: "alert",
      text: "No pipeline can run now: no worker is online for its steps. Start the workers and reload." }));
  }
  box.removeAttribute("aria-busy");
  pipelineChanged();
}

function pipelineChanged() {
  const lora = trainsLora(selectedTemplate());
  document.getElementById("photos-box").hidden = !lora;
  document.getElementById("portrait-fieldset").hidden = lora;
  renderAdvanced();
}

// --- Advanced: fields from the parameter schemas ------------------------------------

function fieldFor(node, key, schema) {
  const id = `param-${node.id}-${key}`;
  const initial = key in node.params ? node.params[key] : schema.default;
  const label = element("label", { for: id, text: key.replaceAll("_", " ") });
  let input;
  if (Array.isArray(schema.enum)) {
    input = element("select", { id });
    for (const option of schema.enum) {
      input.append(element("option", { value: JSON.stringify(option), text: String(option), selected: option === initial }));
    }
    input.dataset.kind = "enum";
  } else if (schema.type === "integer" || schema.type === "number") {
    input = element("input", {
      id, type: "number", inputmode: schema.type === "integer" ? "numeric" : "decimal",
      min: schema.minimum, max: schema.maximum,
      step: schema.type === "integer" ? schema.multipleOf || 1 : schema.multipleOf || "any",
      value: initial === undefined ? "" : String(initial),
    });
    input.dataset.kind = schema.type;
  } else if (schema.type === "boolean") {
    input = element("input", { id, type: "checkbox", checked: Boolean(initial) });
    input.dataset.kind = "boolean";
    return element("div", { class: "field checkbox" }, input, label);
  } else if (schema.type === "string") {
    input = element("input", { id, type: "text", maxlength: schema.maxLength, value: initial === undefined ? "" : initial });
    input.dataset.kind = "string";
  } else {
    return null;
  }
  input.dataset.node = node.id;
  input.dataset.param = key;
  input.dataset.initial = input.type === "checkbox" ? String(input.checked) : input.value;
  return element("div", { class: "field" }, label, input);
}

function renderAdvanced() {
  const box = document.getElementById("advanced-fields");
  box.replaceChildren();
  const template = selectedTemplate();
  if (!template) {
    box.append(element("p", { class: "muted", text: "Pick a pipeline to see its settings." }));
    return;
  }
  for (const node of template.nodes) {
    const properties = (node.paramsSchema && node.paramsSchema.properties) || {};
    const fields = Object.entries(properties)
      .filter(([key]) => !HIDDEN_FIELDS.has(key))
      .map(([key, schema]) => fieldFor(node, key, schema))
      .filter(Boolean);
    if (!fields.length) continue;
    box.append(element("fieldset", { class: "node-params" },
      element("legend", { text: `${node.name} (${node.service})` }), ...fields));
  }
  if (!box.children.length) box.append(element("p", { class: "muted", text: "This pipeline has no settings." }));
}

function advancedParams() {
  const params = {};
  for (const input of document.querySelectorAll("#advanced-fields [data-param]")) {
    const value = input.type === "checkbox" ? String(input.checked) : input.value;
    if (value === input.dataset.initial) continue;
    if (input.type === "number" && !input.checkValidity()) {
      throw new Error(`${input.dataset.node} ${input.dataset.param}: ${input.validationMessage}`);
    }
    let parsed = value;
    if (input.dataset.kind === "enum") parsed = JSON.parse(value);
    else if (input.dataset.kind === "integer") parsed = parseInt(value, 10);
    else if (input.dataset.kind === "number") parsed = parseFloat(value);
    else if (input.dataset.kind === "boolean") parsed = input.checked;
    if (value === "" && input.type === "number") continue;
    (params[input.dataset.node] ||= {})[input.dataset.param] = parsed;
  }
  return params;
}

// --- Files ----------------------------------------------------------------------------

function checkFile(file, kind) {
  if (!file) return null;
  if (!file.type.startsWith(`${kind}/`)) return `${file.name} is not ${kind === "image" ? "an image" : "audio"}.`;
  const limit = data.limits[kind].maxBytes;
  if (file.size > limit) return `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; at most ${(limit / 1048576).toFixed(0)} MB.`;
  if (file.size === 0) return `${file.name} is empty.`;
  return null;
}

function watchFile(inputId, kind, previewId, statusId) {
  const input = document.getElementById(inputId);
  const preview = document.getElementById(previewId);
  const status = document.getElementById(statusId);
  input.addEventListener("change", () => {
    const file = input.files[0];
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.hidden = true;
    const problem = checkFile(file, kind);
    input.setAttribute("aria-invalid", problem ? "true" : "false");
    status.textContent = problem || (file ? `${file.name} · ${(file.size / 1024).toFixed(0)} kB, ready to upload` : "");
    status.className = problem ? "small error-text" : "small";
    if (file && !problem) {
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }
  });
}

// The photos of a LoRA pipeline: each one checked and previewed, the count checked.
function photoProblems(files) {
  const problems = files.map((file) => checkFile(file, "image")).filter(Boolean);
  const { min, max } = data.photos;
  if (files.length && (files.length < min || files.length > max)) {
    problems.unshift(`${files.length} photo${files.length === 1 ? "" : "s"} chosen; ${min} to ${max} are needed.`);
  }
  return problems;
}

function photosChanged() {
  const input = document.getElementById("photos");
  const list = document.getElementById("photos-previews");
  const status = document.getElementById("photos-status");
  for (const image of list.querySelectorAll("img")) URL.revokeObjectURL(image.src);
  list.replaceChildren();
  const files = [...input.files];
  for (const file of files) {
    const problem = checkFile(file, "image");
    const item = element("li", { class: problem ? "bad" : "" });
    if (!problem) item.append(element("img", { src: URL.createObjectURL(file), alt: `Preview of ${file.name}` }));
    item.append(element("span", { class: problem ? "small error-text" : "small muted", text: problem || file.name }));
    list.append(item);
  }
  const problems = photoProblems(files);
  input.setAttribute("aria-invalid", problems.length ? "true" : "false");
  const bytes = files.reduce((sum, file) => sum + file.size, 0);
  const size = bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} kB`;
  status.textContent = problems.length ? problems.join(" ")
    : files.length ? `${files.length} photos · ${size}, ready to upload` : "";
  status.className = problems.length ? "small error-text" : "small";
}

async function uploadPhotos() {
  const files = [...document.getElementById("photos").files];
  if (!files.length) throw new Error(`Choose ${data.photos.min} to ${data.photos.max} photos, or an identity LoRA.`);
  const problems = photoProblems(files);
  if (problems.length) throw new Error(problems[0]);
  const bar = document.getElementById("photos-progress");
  const status = document.getElementById("photos-status");
  const total = files.reduce((sum, file) => sum + file.size, 0);
  let done = 0;
  bar.value = 0;
  bar.hidden = false;
  const ids = [];
  try {
    for (const [index, file] of files.entries()) {
      if (!uploaded.has(file)) {
        status.textContent = `Uploading photo ${index + 1} of ${files.length}…`;
        const record = await upload(file, (fraction) => { bar.value = (done + fraction * file.size) / total; });
        uploaded.set(file, record.id);
      }
      done += file.size;
      bar.value = done / total;
      ids.push(uploaded.get(file));
    }
  } finally {
    bar.hidden = true; // the status line says how it went
  }
  status.textContent = `${files.length} photos uploaded.`;
  return ids.map((id) => ({ artifact: id }));
}

async function uploadFile(inputId, kind, progressId, statusId) {
  const file = document.getElementById(inputId).files[0];
  const problem = checkFile(file, kind);
  if (problem) throw new Error(problem);
  if (uploaded.has(file)) return uploaded.get(file);
  const bar = document.getElementById(progressId);
  const status = document.getElementById(statusId);
  bar.value = 0;
  bar.hidden = false;
  status.textContent = `Uploading ${file.name}…`;
  let record;
  try {
    record = await upload(file, (fraction) => { bar.value = fraction; });
  } finally {
    bar.hidden = true; // the status line says how it went
  }
  status.textContent = `${file.name} uploaded.`;
  uploaded.set(file, record.id);
  if (record.face) faces.set(record.id, record.face);
  return record.id;
}

// The portrait is uploaded as soon as it is chosen: the server finds the face in it, and
// the preview shows the face box, or says why the photo cannot speak.
const faces = new Map(); // upload id -> the server's face check
async function portraitChanged() {
  const input = document.getElementById("portrait");
  const file = input.files[0];
  const frame = document.getElementById("portrait-face");
  frame.hidden = true;
  if (!file || checkFile(file, "image")) return;
  const status = document.getElementById("portrait-status");
  try {
    const id = await uploadFile("portrait", "image", "portrait-progress", "portrait-status");
    const face = faces.get(id);
    if (!face) return;
    status.textContent = face.found ? `${file.name}: ${face.message}` : `${file.name}: ${face.message}.`;
    status.className = face.found ? "small" : "small error-text";
    input.setAttribute("aria-invalid", face.found ? "false" : "true");
    if (face.found && face.box) {
      const [left, top, right, bottom] = face.box;
      frame.style.left = `${(100 * left) / face.width}%`;
      frame.style.top = `${(100 * top) / face.height}%`;
      frame.style.width = `${(100 * (right - left)) / face.width}%`;
      frame.style.height = `${(100 * (bottom - top)) / face.height}%`;
      frame.hidden = false;
    }
  } catch (error) {
    status.textContent = error.message;
    status.className = "small error-text";
  }
}

function portraitProblem(id) {
  const face = faces.get(id);
  return face && !face.found ? `The portrait cannot speak: ${face.message}.` : "";
}

// --- Submitting ---------------------------------------------------------------------

function chosenProfile(id = "voice-profile") {
  const select = document.getElementById(id);
  return select ? select.value : "";
}

async function submit(event) {
  event.preventDefault();
  errorBox.hidden = true;
  const button = document.getElementById("submit-button");
  const template = selectedTemplate();
  try {
    if (!template) throw new Error("Pick a pipeline.");
    const words = form.querySelector('input[name="words"]:checked').value;
    const text = document.getElementById(words).value.trim();
    if (!text) throw new Error(words === "topic" ? "Say what the video is about." : "Write the narration.");
    const profileId = chosenProfile();
    const lora = trainsLora(template);
    const loraId = lora ? chosenProfile("lora-profile") : "";
    const needs = new Set(template.requiredInputs);
    const params = advancedParams();
    const scriptNode = template.nodes.find((n) =>
      "topic" in n.params || "topic" in ((n.paramsSchema && n.paramsSchema.properties) || {}));
    if (scriptNode) (params[scriptNode.id] ||= {})[words] = text;
    const inputs = {};
    button.disabled = true;
    if (lora) {
      if (!loraId && needs.has("photos")) inputs.photos = await uploadPhotos();
    } else if (needs.has("photos") || needs.has("portrait") || needs.has("image")) {
      if (!document.getElementById("portrait").files[0]) throw new Error("Choose a portrait.");
      const id = await uploadFile("portrait", "image", "portrait-progress", "portrait-status");
      if (portraitProblem(id)) throw new Error(portraitProblem(id));
      if (needs.has("photos")) inputs.photos = [{ artifact: id }];
      if (needs.has("portrait")) inputs.portrait = { artifact: id };
      if (needs.has("image")) inputs.image = { artifact: id };
    }
    if (!profileId && needs.has("voice_sample")) {
      if (!document.getElementById("voice").files[0]) throw new Error("Choose a voice sample, or a voice profile.");
      const transcript = document.getElementById("transcript").value.trim();
      if (!transcript) throw new Error("Write what the voice sample says.");
      inputs.voice_sample = { artifact: await uploadFile("voice", "audio", "voice-progress", "voice-status") };
      inputs.transcript = transcript;
    }
    const body = profileId || loraId
      ? withProfiles(data.graphs[template.name], template.name, params, inputs, profileId, loraId)
      : { template: template.name, params, inputs };
    const job = await api("POST", "/api/jobs", body);
    window.location.assign(`/jobs/${job.id}/`);
  } catch (error) {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
    button.disabled = false;
    errorBox.focus?.();
  }
}

function wordsChanged() {
  const words = form.querySelector('input[name="words"]:checked').value;
  document.getElementById("topic-field").hidden = words !== "topic";
  document.getElementById("narration-field").hidden = words !== "narration";
}

function profileChanged() {
  document.getElementById("voice-sample-fields").hidden = Boolean(chosenProfile());
  document.getElementById("photo-fields").hidden = Boolean(chosenProfile("lora-profile"));
}

// --- Describe the video: the inputs a plan may use --------------------------------------

async function chosenInputs() {
  const inputs = {};
  if (document.getElementById("portrait").files[0]) {
    const id = await uploadFile("portrait", "image", "portrait-progress", "portrait-status");
    inputs.photos = [{ artifact: id }];
    inputs.portrait = { artifact: id };
    inputs.image = { artifact: id };
  }
  if (document.getElementById("voice").files[0]) {
    inputs.voice_sample = { artifact: await uploadFile("voice", "audio", "voice-progress", "voice-status") };
  }
  const transcript = document.getElementById("transcript").value.trim();
  if (transcript) inputs.transcript = transcript;
  return inputs;
}

// --- A ComfyUI workflow as a pipeline -------------------------------------------------

async function readJson(file) {
  try {
    return JSON.parse(await file.text());
  } catch (error) {
    throw new Error(`${file.name} is not JSON: ${error.message}`);
  }
}

async function addWorkflow(event) {
  event.preventDefault();
  const errors = document.getElementById("workflow-error");
  const button = document.getElementById("workflow-button");
  errors.hidden = true;
  try {
    const label = document.getElementById("workflow-label").value.trim();
    if (!label) throw new Error("Name the pipeline.");
    const file = document.getElementById("workflow-file").files[0];
    if (!file) throw new Error("Choose the workflow's JSON file (ComfyUI: Save (API)).");
    const workflow = await readJson(file);
    const sidecarFile = document.getElementById("workflow-sidecar").files[0];
    const sidecar = sidecarFile ? await readJson(sidecarFile) : {};
    // A sidecar is the bindings themselves, or an object that holds them under "bindings".
    const bindings = sidecar && typeof sidecar.bindings === "object" ? sidecar.bindings : sidecar;
    button.disabled = true;
    await api("POST", "/api/templates", { label, workflow, bindings });
    event.target.reset();
    await loadTemplates();
  } catch (error) {
    errors.textContent = error.message;
    errors.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function deleteWorkflow(button) {
  if (!(await confirmAction("Delete this pipeline? Jobs made from it keep their steps."))) return;
  try {
    await api("DELETE", `/api/templates/${button.dataset.deleteTemplate}`);
    await loadTemplates();
  } catch (error) {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
  }
}

async function loadTemplates() {
  const body = await api("GET", "/api/templates");
  templates = body.templates;
  renderPipelines();
}

setupDescribe(chosenInputs);
document.getElementById("workflow-form").addEventListener("submit", addWorkflow);
document.getElementById("pipelines").addEventListener("click", (event) => {
  const button = event.target.closest("[data-delete-template]");
  if (button) deleteWorkflow(button);
});
watchFile("portrait", "image", "portrait-preview", "portrait-status");
watchFile("voice", "audio", "voice-preview", "voice-status");
form.addEventListener("submit", submit);
form.addEventListener("change", (event) => {
  if (event.target.name === "pipeline") pipelineChanged();
  if (event.target.id === "photos") photosChanged();
  if (event.target.id === "portrait") portraitChanged();
  if (event.target.name === "words") wordsChanged();
  if (event.target.id === "voice-profile" || event.target.id === "lora-profile") profileChanged();
});
profileChanged();
loadTemplates()
  .catch((error) => {
    errorBox.textContent = `The pipelines could not be loaded: ${error.message}`;
    errorBox.hidden = false;
  });
