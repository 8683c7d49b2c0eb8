// Where the native bulk copy starts to win (not a test): node bench/copy-threshold.mjs after a
// build. For each size, GuestMemory.read into a Buffer and GuestMemory.write from it, over the
// same mmap memory with the native copy for every length (thresholds 1) and with none
// (TypedArray.prototype.set), interleaved in one run; medians of RUNS runs, ns per copy.
// Sets NATIVE_COPY_MIN_READ / NATIVE_COPY_MIN_WRITE (src/native-copy.ts); numbers in
// DESIGN.md, "Bulk copies".
import os from "node:os";
import { GuestMemoryMmap, nativeBulkCopier } from "../dist/mmap.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const RUN_MS = Number(process.env.BENCH_RUN_MS ?? 100);
const SIZES = [64, 128, 256, 320, 384, 448, 512, 640, 768, 1024, 1280, 1536, 1792, 2048, 3072, 4096, 16384];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const ranges = [{ start: 0, size: 2 << 20 }];
const mems = {
  native: GuestMemoryMmap.fromRanges(ranges, { bulkCopier: { copy: nativeBulkCopier().copy, minReadLength: 1, minWriteLength: 1 } }),
  js: GuestMemoryMmap.fromRanges(ranges, { bulkCopier: null }),
};
const buf = Buffer.alloc(16384, 7);
const ADDR = 0x40000;

function nsPerOp(fn) {
  for (let i = 0; i < 20000; i++) fn();
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < RUN_MS) {
    for (let i = 0; i < 1000; i++) fn();
    n += 1000;
    t = performance.now();
  }
  return ((t - t0) * 1e6) / n;
}

const rows = [];
for (const size of SIZES) {
  const dest = buf.subarray(0, size);
  const res = { size };
  const samples = {};
  for (let r = 0; r < RUNS; r++) {
    for (const [name, mem] of Object.entries(mems)) {
      (samples[`${name}_read`] ??= []).push(nsPerOp(() => mem.read(ADDR, dest)));
      (samples[`${name}_write`] ??= []).push(nsPerOp(() => mem.write(ADDR, dest)));
    }
  }
  for (const [k, v] of Object.entries(samples)) res[k] = Number(median(v).toFixed(1));
  rows.push(res);
  console.log(
    `${String(size).padStart(6)} B  read: native ${res.native_read} ns, set ${res.js_read} ns (${(res.js_read / res.native_read).toFixed(2)}x)` +
      `   write: native ${res.native_write} ns, set ${res.js_write} ns (${(res.js_write / res.native_write).toFixed(2)}x)`,
  );
}
const from = (dir) => {
  const i = rows.findIndex((_, j) => rows.slice(j).every((r) => r[`native_${dir}`] < r[`js_${dir}`]));
  return i < 0 ? "nowhere" : `${rows[i].size} B`;
};
console.log(`load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} on ${os.cpus().length} CPUs, node ${process.version}`);
console.log(`native wins (at that size and every larger one): reads from ${from("read")}, writes from ${from("write")}`);
console.log(JSON.stringify({ bench: "copy-threshold", rows }));
