// The `pvh` namespace of the public API.
export { buildStartInfo, XEN_HVM_START_MAGIC, START_INFO_SIZE, MODLIST_ENTRY_SIZE, MEMMAP_ENTRY_SIZE } from "./pvh.js";
