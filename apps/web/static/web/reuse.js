// Reusing profiles: the graph a pipeline's template becomes when the user picks a voice
// profile (its voice.build_profile step is left out; the steps after it get the profile
// as their profile_id input) or a LoRA profile (its lora.train step gets params.profile_id
// and no photos, so it trains nothing and hands on that profile's LoRA). No DOM here:
// tests run it under Node as well.
export const PROFILE_SERVICE = "voice.build_profile";
export const LORA_SERVICE = "lora.train";

export function withProfiles(template, name, params, inputs, voiceId, loraId) {
  const graph = structuredClone(template);
  const dropped = new Set(voiceId ? graph.nodes.filter((n) => n.service === PROFILE_SERVICE).map((n) => n.id) : []);
  if (voiceId && !dropped.size) throw new Error("This pipeline cannot reuse a voice profile; pick “Build a new one”.");
  if (loraId && !graph.nodes.some((n) => n.service === LORA_SERVICE)) {
    throw new Error("This pipeline trains no LoRA; pick “Train a new one”.");
  }
  const successors = new Set(graph.edges.filter((e) => dropped.has(e.from)).map((e) => e.to));
  graph.nodes = graph.nodes.filter((n) => !dropped.has(n.id));
  graph.edges = graph.edges.filter((e) => !dropped.has(e.from) && !dropped.has(e.to));
  for (const node of graph.nodes) {
    node.params = { ...(node.params || {}), ...(params[node.id] || {}) };
    const wanted = node.input || {};
    if (loraId && node.service === LORA_SERVICE) {
      node.params = { profile_id: loraId }; // training settings do not apply to a reused LoRA
      delete wanted.photos;
    }
    for (const [key, value] of Object.entries(wanted)) if (value === null) wanted[key] = inputs[key];
    if (successors.has(node.id)) wanted.profile_id = voiceId;
    if (Object.keys(wanted).length) node.input = wanted;
    else delete node.input;
  }
  graph.metadata = { ...(graph.metadata || {}), template: name };
  if (voiceId) graph.metadata.voiceProfile = voiceId;
  if (loraId) graph.metadata.loraProfile = loraId;
  return { graph };
}
