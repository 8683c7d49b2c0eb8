export { checkNeeds, describeKvm, describeWith } from "./gate.js";
export type { GateResult, Needs } from "./gate.js";
export { cacheDir } from "./cache.js";
