export { checkNeeds, describeKvm, describeWith } from "./gate.js";
export type { GateResult, Needs } from "./gate.js";
export { cacheDir } from "./cache.js";
export { debianKernel, extractVmlinux } from "./debian-kernel.js";
export type { DebianKernel, DebianKernelOptions } from "./debian-kernel.js";
export { Qmp, QmpError, parseInfoRegisters, startQemu } from "./qmp.js";
export type { QemuInstance, QmpEvent } from "./qmp.js";
