// A langgraph.v1 graph laid out by dependency (dagre) and drawn as SVG: one box per node
// (name, a detail line, a progress track) and an arrow per edge. Used by the job page,
// which paints each box with its node's live state, and by the New video page, which
// shows a planned graph for review before it runs.
import dagre from "../vendor/dagre/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
export const BOX = { width: 210, height: 74 };

export function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

export function shorten(text, length) {
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

// Draws `graph` into `holder` (replacing what was there) and returns a Map of node id to
// its <g class="node" data-node-id> element, whose ".detail" text, ".bar" width and
// <title> the caller fills in.
export function drawGraph(holder, graph, label) {
  const narrow = window.matchMedia("(max-width: 640px)").matches;
  const layout = new dagre.graphlib.Graph();
  layout.setGraph({ rankdir: narrow ? "TB" : "LR", nodesep: 22, ranksep: narrow ? 36 : 56, marginx: 8, marginy: 8 });
  layout.setDefaultEdgeLabel(() => ({}));
  // dagre keeps nodes in plain objects keyed by id, where an id such as "__proto__" or
  // "constructor" is not a plain key: it lays out positions ("n0", "n1"...) instead.
  const ids = graph.nodes.map((node) => node.id);
  const at = new Map(ids.map((id, index) => [id, `n${index}`]));
  const idAt = (key) => ids[Number(key.slice(1))];
  for (const id of ids) layout.setNode(at.get(id), { ...BOX });
  for (const edge of graph.edges) {
    layout.setEdge(at.get(edge.from), at.get(edge.to), { kind: edge.kind || "normal" });
  }
  dagre.layout(layout);
  const size = layout.graph();
  const canvas = svg("svg", {
    viewBox: `0 0 ${Math.ceil(size.width)} ${Math.ceil(size.height)}`,
    role: "group",
    "aria-label": label,
    class: "dag-svg",
  });
  canvas.style.maxWidth = `${Math.ceil(size.width)}px`;
  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto",
  });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.append(marker);
  canvas.append(defs);
  const edges = svg("g", { class: "edges", "aria-hidden": "true" });
  for (const ref of layout.edges()) {
    const points = layout.edge(ref).points;
    const path = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    edges.append(svg("path", {
      d: path, class: `edge ${layout.edge(ref).kind}`, "marker-end": "url(#arrow)",
      "data-from": idAt(ref.v), "data-to": idAt(ref.w),
    }));
  }
  canvas.append(edges);
  const groups = new Map();
  for (const node of graph.nodes) {
    const place = layout.node(at.get(node.id));
    const group = svg("g", {
      class: "node",
      transform: `translate(${(place.x - BOX.width / 2).toFixed(1)},${(place.y - BOX.height / 2).toFixed(1)})`,
      "data-node-id": node.id,
      role: "img",
      tabindex: "0",
    });
    group.append(svg("rect", { class: "box", width: BOX.width, height: BOX.height, rx: 10 }));
    const name = svg("text", { class: "name", x: 12, y: 22 });
    name.textContent = shorten(node.name || node.id, 24);
    const detail = svg("text", { class: "detail", x: 12, y: 42 });
    group.append(name, detail);
    group.append(svg("rect", { class: "track", x: 12, y: 54, width: BOX.width - 24, height: 7, rx: 3.5 }));
    group.append(svg("rect", { class: "bar", x: 12, y: 54, width: 0, height: 7, rx: 3.5 }));
    group.append(svg("title"));
    canvas.append(group);
    groups.set(node.id, group);
  }
  holder.replaceChildren(canvas);
  holder.removeAttribute("aria-busy");
  return groups;
}
