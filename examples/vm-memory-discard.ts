// packages/vm-memory/README.md, ts/js code block 2: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { fstatSync } from "node:fs";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";

// Give a guest range back to the host (a balloon inflate): the memfd's blocks are freed.
const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 16 << 20 }]);
mem.write(0, new Uint8Array(16 << 20).fill(1));
const fd = mem.regions[0]!.fd!;
console.log(fstatSync(fd).blocks * 512);   // 16777216
console.log(mem.discardGranularity());     // 4096 (a huge page size on hugetlb memory)
mem.discardRange(4 << 20, 8 << 20);        // MADV_REMOVE: punch-hole on the memfd
console.log(fstatSync(fd).blocks * 512);   // 8388608
console.log(mem.readU8(4 << 20));          // 0
mem.close();
