// The parts of test-utils that do not need vitest: usable from plain Node
// scripts and CLIs (the Linux guest kit, benchmarks). The "." entry adds the
// vitest test gate on top of these.
export { checkNeeds, KVM_DEVICE } from "./needs.js";
export type { GateResult, HostFeature, Needs } from "./needs.js";
export { cacheDir } from "./cache.js";
export { compareVersions, debianKernel, extractVmlinux } from "./debian-kernel.js";
export type { DebianKernel, DebianKernelOptions } from "./debian-kernel.js";
export { Qmp, QmpError, parseInfoRegisters, startQemu } from "./qmp.js";
export type { QemuInstance, QmpEvent } from "./qmp.js";
export { NetNamespace, uniqueIfName } from "./netns.js";
export { readHugePagePool, reserveHugePages, residentPages, smapsEntry } from "./huge-pages.js";
export type { HugePagePoolState, HugePageReservation } from "./huge-pages.js";
