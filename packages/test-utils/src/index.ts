export * from "./node.js";
export { describeKvm, describeWith } from "./gate.js";
