// Micro-benchmark of the hot paths (not a test): node bench/access.mjs after a build.
// Prints medians of 5 runs; ratios are against a baseline measured in the same run.
import { GuestMemoryArrayBuffer } from "../dist/index.js";
import { GuestMemoryMmap } from "../dist/mmap.js";

const RUNS = 5;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function rate(fn, iters) {
  fn(1000); // warm up
  const out = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    fn(iters);
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    out.push(iters / dt);
  }
  return median(out);
}

const N = 5_000_000;
const SIZE = 16 << 20;
const mems = {
  arraybuffer: GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SIZE }, { start: SIZE, size: SIZE }]),
  mmap: GuestMemoryMmap.fromRanges([{ start: 0, size: SIZE }, { start: SIZE, size: SIZE }]),
};
const results = {};
for (const [name, mem] of Object.entries(mems)) {
  const base = SIZE + 0x1000;
  const dv = new DataView(mem.regions[1].bytes.buffer, mem.regions[1].bytes.byteOffset, SIZE);
  let sink = 0;
  results[`${name}_dataview_u16_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += dv.getUint16(0x1000 + ((i & 0xff) << 1), true);
  }, N);
  results[`${name}_readU16_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += mem.readU16(base + ((i & 0xff) << 1));
  }, N);
  results[`${name}_readU32_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += mem.readU32(base + ((i & 0xff) << 2));
  }, N);
  results[`${name}_writeU16_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) mem.writeU16(base + ((i & 0xff) << 1), i & 0xffff);
  }, N);
  results[`${name}_loadU16Acquire_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += mem.loadU16Acquire(base + ((i & 0xff) << 1));
  }, N);
  results[`${name}_storeU16Release_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) mem.storeU16Release(base + ((i & 0xff) << 1), i & 0xffff);
  }, N);
  mem.write(base, new Uint8Array(0x1000));
  results[`${name}_readU64AsAddress_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += mem.readU64AsAddress(base + ((i & 0xff) << 3));
  }, N);
  // alternating between two regions defeats the last-hit cache
  results[`${name}_readU16_alternating_per_s`] = rate((n) => {
    for (let i = 0; i < n; i++) sink += mem.readU16((i & 1) * SIZE + ((i & 0xff) << 1));
  }, N / 5);
  const buf = Buffer.alloc(4096);
  const src = Buffer.from(mem.regions[1].bytes.buffer, mem.regions[1].bytes.byteOffset + 0x10000, 4096);
  const copy = rate((n) => {
    for (let i = 0; i < n; i++) src.copy(buf, 0, 0, 4096);
  }, N / 10);
  const rd = rate((n) => {
    for (let i = 0; i < n; i++) mem.read(base + 0xf000, buf);
  }, N / 10);
  const wr = rate((n) => {
    for (let i = 0; i < n; i++) mem.write(base + 0xf000, buf);
  }, N / 10);
  results[`${name}_buffer_copy_4k_gbps`] = (copy * 4096 * 8) / 1e9;
  results[`${name}_read_4k_gbps`] = (rd * 4096 * 8) / 1e9;
  results[`${name}_write_4k_gbps`] = (wr * 4096 * 8) / 1e9;
  results[`${name}_read_4k_vs_buffer_copy`] = rd / copy;
  results[`${name}_write_4k_vs_buffer_copy`] = wr / copy;
  if (sink === 0.5) console.log(sink);
}
for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(40)} ${v >= 100 ? (v / 1e6).toFixed(1) + " M" : v.toFixed(2)}`);
console.log(JSON.stringify({ bench: "vm-memory-access", date: new Date().toISOString(), node: process.version, ...Object.fromEntries(Object.entries(results).map(([k, v]) => [k, Number(v.toPrecision(4))])) }));
mems.mmap.close();
