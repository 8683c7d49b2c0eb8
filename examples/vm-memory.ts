// packages/vm-memory/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { GuestMemoryError, defineLayout, readObj, toGuestAddress, translate } from "@ts-vmm/vm-memory";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";

// 128 MiB of memfd-backed RAM at 0, plus 16 MiB above a hole, with dirty tracking.
const mem = GuestMemoryMmap.fromRanges(
  [{ start: 0, size: 128 << 20 }, { start: 0x1_0000_0000, size: 16 << 20 }],
  { dirtyTracking: true },
);
const ram = mem.regions[0]!; // ram.hostAddress, ram.size: for KVM_SET_USER_MEMORY_REGION

mem.writeU32(0x1000, 0xdeadbeef);
console.log(mem.readU32(0x1000).toString(16));          // deadbeef
console.log([...mem.dirtyPages()]);                      // [ 4096 ]

// A guest-written descriptor: the 64-bit address is checked below 2^52 before it is a number.
const VirtqDesc = defineLayout("virtq_desc", 16, {
  addr: { type: "addr", offset: 0 }, len: { type: "u32", offset: 8 },
  flags: { type: "u16", offset: 12 }, next: { type: "u16", offset: 14 },
});
mem.writeU64(0x2000, 0xffff_ffff_ffff_0000n);
try {
  readObj(mem, 0x2000, VirtqDesc);
} catch (e) {
  if (e instanceof GuestMemoryError) console.log(e.code);  // AddressTooLarge
}
const { lo, hi } = mem.readU64Split(0x1000);
console.log(toGuestAddress(lo, hi));                     // 3735928559

try {
  mem.readU64(128 << 20);                                // in the hole
} catch (e) {
  console.log((e as GuestMemoryError).code);             // Hole
}

// Ring indices: atomic, naturally aligned.
mem.storeU16Release(0x3002, 7);
console.log(mem.loadU16Acquire(0x3002));                 // 7

// Guest virtual -> guest physical through the guest's page tables.
const r = translate(mem, 0x9000n, 0xffff_8000_0000_1000n, { access: "read" });
console.log(r.ok ? r.gpa : `${r.fault} at level ${r.level}`); // NotPresent at level 4

mem.close();
