// The loader is typed against vm-memory's GuestMemory seam; it uses only
// `size`, `checkRange`, `read` and `write`.
export type { GuestMemory } from "@ts-vmm/vm-memory";
