// The `cpuState` namespace of the public API.
export { longModeState as longMode, pvhState as pvh, gdtEntry, BOOT_CS, BOOT_DS, BOOT_TSS, IDENTITY_MAP_GIB } from "./cpu-state.js";
