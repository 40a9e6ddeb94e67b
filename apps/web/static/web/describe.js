// "Describe the video": the request goes to POST /api/plan with the inputs chosen on the
// page; the plan comes back for review (its steps drawn as a graph, each step's service
// and parameters listed, and who planned it: the LLM, or a template and why), and only
// "Run this plan" submits it, unchanged, to POST /api/jobs.
import { api, element } from "./common.js";
import { drawGraph } from "./dag.js";

function sourceText(plan) {
  if (plan.source === "llm") {
    return `Planned by ${plan.model} from the services the workers offer (${plan.attempts} attempt${plan.attempts === 1 ? "" : "s"}).`;
  }
  return `A template stands in: ${plan.reason}.`;
}

function paramsList(graph) {
  const sections = graph.nodes.map((node) => {
    const text = JSON.stringify(node.params || {}, null, 2);
    const inputs = Object.keys(node.input || {});
    return element("details", { class: "node-params", "data-node-id": node.id },
      element("summary", { text: `${node.name || node.id} (${node.service})` }),
      inputs.length ? element("p", { class: "small muted", text: `Takes ${inputs.join(", ")}` }) : "",
      element("pre", { class: "small", text }));
  });
  return sections;
}

function showPlan(plan) {
  document.getElementById("plan-source").textContent = sourceText(plan);
  const review = document.getElementById("plan-review");
  review.hidden = false;
  review.dataset.source = plan.source;
  const groups = drawGraph(document.getElementById("plan-dag"), plan.graph, "The planned steps, laid out by dependency");
  for (const node of plan.graph.nodes) {
    const group = groups.get(node.id);
    group.querySelector(".detail").textContent = node.service;
    group.setAttribute("aria-label", `${node.name || node.id}: ${node.service}`);
    group.querySelector("title").textContent = `${node.name || node.id} (${node.service})`;
  }
  document.getElementById("plan-params").replaceChildren(...paramsList(plan.graph));
}

// `collectInputs()` uploads what the page has chosen and resolves to the job inputs.
export function setupDescribe(collectInputs) {
  const errorBox = document.getElementById("plan-error");
  const runButton = document.getElementById("run-plan");
  let planned = null;
  const fail = (error) => {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
  };
  document.getElementById("describe").addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const button = document.getElementById("plan-button");
    const request = document.getElementById("describe-request").value.trim();
    try {
      if (!request) throw new Error("Say what the video should be.");
      button.disabled = true;
      const inputs = await collectInputs();
      const plan = await api("POST", "/api/plan", { request, inputs });
      planned = plan.graph;
      showPlan(plan);
    } catch (error) {
      fail(error);
    } finally {
      button.disabled = false;
    }
  });
  runButton.addEventListener("click", async () => {
    errorBox.hidden = true;
    runButton.disabled = true;
    try {
      const job = await api("POST", "/api/jobs", { graph: planned });
      window.location.assign(`/jobs/${job.id}/`);
    } catch (error) {
      fail(error);
      runButton.disabled = false;
    }
  });
}
