// packages/vm-memory/README.md, ts/js code block 3: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { GuestMemoryArrayBuffer, GuestMemoryError, sliceRange } from "@ts-vmm/vm-memory";

// 1 MiB at 0 and 64 KiB at 16 MiB, in SharedArrayBuffers (postable to workers).
const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 1 << 20 }, { start: 16 << 20, size: 64 << 10 }]);
mem.writeU64(0x100, 0x1122_3344_5566_7788n);
console.log(mem.readU32(0x104).toString(16));                  // 11223344
const views = sliceRange(mem, 0x100, 8);                        // zero-copy views of guest memory
console.log(views.length, views[0]!.byteLength);                // 1 8
try {
  mem.read(1 << 20, new Uint8Array(4));                         // the hole after the first region
} catch (e) {
  console.log((e as GuestMemoryError).code);                   // Hole
}
console.log(mem.toTransferable().kind);                         // arraybuffer
