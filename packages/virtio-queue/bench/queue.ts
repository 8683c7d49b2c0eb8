// `pnpm bench:queue`: device-side virtqueue throughput over a GuestMemoryArrayBuffer.
// Each figure is the median of several runs. The copy figures (4 KiB guest -> Buffer and
// back through a chain) are over mmap guest memory as the VMM has it (GuestMemoryMmap, whose
// bulk copies go through vmm-sys-util's native memmove), and over the same memory without
// the native copy (TypedArray.prototype.set); they are compared with a native memcpy
// between two SharedArrayBuffers of guest memory's size and with Buffer.copy between two
// Buffers, both measured in the same run. The last line is the JSON summary.
import os from "node:os";
import { GuestMemoryArrayBuffer, type GuestMemory } from "@ts-vmm/vm-memory";
import { GuestMemoryMmap, nativeBulkCopier } from "@ts-vmm/vm-memory/mmap";
import { MockPackedQueue, MockSplitQueue } from "../src/mock/index.js";
import { ReusableChain, type Queue } from "../src/index.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const RUN_MS = Number(process.env.BENCH_RUN_MS ?? 300);
const SIZE = 256;
const DATA = 0x40000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Ops per CPU-second of this process, per measurement: less sensitive to a loaded machine than wall time. */
const cpuRates: Record<string, number[]> = {};

/**
 * Runs `batch` (which does `perBatch` operations) for about RUN_MS; returns
 * ops per wall-clock second, and records ops per CPU second under `name`.
 */
function rate(name: string, batch: () => void, perBatch: number): number {
  for (let i = 0; i < 50; i++) batch(); // warm-up
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < RUN_MS) {
    for (let i = 0; i < 16; i++) batch();
    n += 16;
    t = performance.now();
  }
  const cpu = process.cpuUsage(c0);
  (cpuRates[name] ??= []).push((n * perBatch) / ((cpu.user + cpu.system) / 1e6));
  return (n * perBatch) / ((t - t0) / 1000);
}

function memory(): GuestMemory {
  return GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x20_0000 }], { shared: true });
}

/**
 * Split: the table holds `chains` fixed chains of `len` descriptors; avail slot s
 * always names chain s % chains, so the driver's only work per lap is one index
 * store. The device pops and returns every chain and checks for a notification.
 * `deferred`: the chains are returned with addUsedDeferred, and the lap's
 * needsNotification publishes them with one used idx store (issue 13).
 * `into`: popped with popDescriptorChainInto into one reused chain (no allocation per pop).
 */
function splitBench(descPerChain: number, deferred = false, into = false): () => void {
  const mem = memory();
  const mock = new MockSplitQueue(mem, SIZE, { base: 0x1000 });
  const q = mock.createQueue();
  const chains = descPerChain === 1 ? SIZE : 64;
  for (let c = 0; c < chains; c++) {
    for (let k = 0; k < descPerChain; k++) {
      const i = c * descPerChain + k;
      const last = k === descPerChain - 1;
      mock.writeDescriptor(i, {
        addr: DATA + i * 0x1000,
        len: 512,
        flags: (last ? 0 : 1) | (last && descPerChain > 1 ? 2 : 0),
        next: i + 1,
      });
    }
  }
  for (let s = 0; s < SIZE; s++) mem.writeU16(mock.availRing + 4 + 2 * s, (s % chains) * descPerChain);
  let idx = 0;
  if (into) {
    const rc = new ReusableChain();
    return () => {
      idx = (idx + chains) & 0xffff;
      mock.setAvailIdx(idx);
      for (let i = 0; i < chains; i++) {
        if (!q.popDescriptorChainInto(mem, rc)) throw new Error("bench: ring empty");
        if (deferred) q.addUsedDeferred(mem, rc.head, 0);
        else q.addUsed(mem, rc.head, 0);
      }
      q.needsNotification(mem);
    };
  }
  return () => {
    idx = (idx + chains) & 0xffff;
    mock.setAvailIdx(idx);
    for (let i = 0; i < chains; i++) {
      const c = q.popDescriptorChain(mem);
      if (c === undefined) throw new Error("bench: ring empty");
      if (deferred) q.addUsedDeferred(mem, c.head, 0);
      else q.addUsed(mem, c.head, 0);
    }
    // Publishes the deferred entries (one used idx store per lap) before it decides.
    q.needsNotification(mem);
  };
}

/**
 * Packed: SIZE one-descriptor lists. The device's used write overwrites len,
 * so the driver side re-arms each slot (len, then flags with release): two
 * guest-memory writes per chain are included in this figure.
 */
function packedBench(into = false): () => void {
  const mem = memory();
  const mock = new MockPackedQueue(mem, SIZE, { base: 0x1000 });
  const q: Queue = mock.createQueue();
  for (let i = 0; i < SIZE; i++) {
    mem.writeU64(mock.descRing + i * 16, BigInt(DATA + i * 0x1000));
    mem.writeU16(mock.descRing + i * 16 + 12, i);
  }
  let wrap = true;
  const rc = new ReusableChain();
  return () => {
    const flags = wrap ? 0x80 : 0x8000;
    for (let i = 0; i < SIZE; i++) {
      const at = mock.descRing + i * 16;
      mem.writeU32(at + 8, 512);
      mem.storeU16Release(at + 14, flags);
    }
    wrap = !wrap;
    for (let i = 0; i < SIZE; i++) {
      if (into) {
        if (!q.popDescriptorChainInto(mem, rc)) throw new Error("bench: ring empty");
        q.addUsed(mem, rc.head, 0);
        continue;
      }
      const c = q.popDescriptorChain(mem);
      if (c === undefined) throw new Error("bench: ring empty");
      q.addUsed(mem, c.head, 0);
    }
    q.needsNotification(mem);
  };
}

/**
 * 4 KiB guest -> Buffer (readInto) and Buffer -> guest (writeFrom) through a chain, over
 * `mem`; and the two baselines doing the same two copies: a native memmove between two
 * SharedArrayBuffers of guest memory's size, and Buffer.copy between two Buffers.
 */
function copyBench(mem: GuestMemory): { chain: () => void; memcpy: () => void; sabMemcpy: () => void } {
  const mock = new MockSplitQueue(mem, 16, { base: 0x1000 });
  const q = mock.createQueue();
  mock.addChain([
    { addr: DATA, len: 4096 },
    { addr: DATA + 0x10000, len: 4096, writable: true },
  ]);
  const chain = q.popDescriptorChain(mem);
  if (chain === undefined) throw new Error("bench: no chain");
  // The driver wrote its buffers; untouched memory would be read from the zero page (SAB)
  // or page-cache holes (memfd), which differ from real data and from each other.
  mem.write(DATA, Buffer.alloc(0x20000, 3));
  const buf = Buffer.alloc(4096, 7);
  const big = Buffer.alloc(0x20_0000, 3);
  const sabA = new Uint8Array(new SharedArrayBuffer(0x20_0000)).fill(3);
  const sabB = new Uint8Array(new SharedArrayBuffer(0x20_0000)).fill(3);
  const memmove = nativeBulkCopier()!.copy; // the addon's memmove, checked in C++, no wrapper
  return {
    sabMemcpy: () => {
      memmove(sabB, 0, sabA, DATA, 4096);
      memmove(sabA, DATA + 0x10000, sabB, 0, 4096);
    },
    chain: () => {
      chain.readInto(mem, buf);
      chain.writeFrom(mem, buf);
    },
    memcpy: () => {
      big.copy(buf, 0, DATA, DATA + 4096);
      buf.copy(big, DATA + 0x10000);
    },
  };
}

const results: Record<string, number[]> = {
  split1: [],
  split3: [],
  split1Batched: [],
  packed1: [],
  split1Into: [],
  split3Into: [],
  packed1Into: [],
  copy: [],
  copyJs: [],
  sabMemcpy: [],
  memcpy: [],
};
const s1 = splitBench(1);
const s3 = splitBench(3);
const s1b = splitBench(1, true);
const p1 = packedBench();
const s1i = splitBench(1, false, true);
const s3i = splitBench(3, false, true);
const p1i = packedBench(true);
const guestMmap = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x20_0000 }]);
if (guestMmap.bulkCopier === null) throw new Error("bench: the native copy did not load");
const cp = copyBench(guestMmap);
// The JS path over the same kind of memory (one class, so the copy paths see one shape).
const cpJs = copyBench(GuestMemoryMmap.fromRanges([{ start: 0, size: 0x20_0000 }], { bulkCopier: null }));
for (let r = 0; r < RUNS; r++) {
  results.split1!.push(rate("split1", s1, SIZE));
  results.split3!.push(rate("split3", s3, 64));
  results.split1Batched!.push(rate("split1Batched", s1b, SIZE));
  results.packed1!.push(rate("packed1", p1, SIZE));
  results.split1Into!.push(rate("split1Into", s1i, SIZE));
  results.split3Into!.push(rate("split3Into", s3i, 64));
  results.packed1Into!.push(rate("packed1Into", p1i, SIZE));
  // GB/s: two 4 KiB copies per call.
  results.copy!.push((rate("copy", cp.chain, 1) * 8192) / 1e9);
  results.sabMemcpy!.push((rate("sabMemcpy", cp.sabMemcpy, 1) * 8192) / 1e9);
  results.copyJs!.push((rate("copyJs", cpJs.chain, 1) * 8192) / 1e9);
  results.memcpy!.push((rate("memcpy", cp.memcpy, 1) * 8192) / 1e9);
  console.error(
    `run ${r + 1}/${RUNS}: split1 ${(results.split1!.at(-1)! / 1e6).toFixed(2)} M/s, split3 ${(results.split3!.at(-1)! / 1e6).toFixed(2)} M/s, split1 batched ${(results.split1Batched!.at(-1)! / 1e6).toFixed(2)} M/s, packed1 ${(results.packed1!.at(-1)! / 1e6).toFixed(2)} M/s, into (reused chain): split1 ${(results.split1Into!.at(-1)! / 1e6).toFixed(2)} split3 ${(results.split3Into!.at(-1)! / 1e6).toFixed(2)} packed1 ${(results.packed1Into!.at(-1)! / 1e6).toFixed(2)} M/s, copy ${results.copy!.at(-1)!.toFixed(2)} GB/s (JS path ${results.copyJs!.at(-1)!.toFixed(2)}), SAB memcpy ${results.sabMemcpy!.at(-1)!.toFixed(2)} GB/s, Buffer.copy ${results.memcpy!.at(-1)!.toFixed(2)} GB/s`,
  );
}
const out = {
  bench: "virtqueue",
  split_1desc_chains_per_s: Math.round(median(results.split1!)),
  split_3desc_chains_per_s: Math.round(median(results.split3!)),
  split_1desc_batched_chains_per_s: Math.round(median(results.split1Batched!)),
  packed_1desc_chains_per_s: Math.round(median(results.packed1!)),
  split_1desc_into_chains_per_s: Math.round(median(results.split1Into!)),
  split_3desc_into_chains_per_s: Math.round(median(results.split3Into!)),
  packed_1desc_into_chains_per_s: Math.round(median(results.packed1Into!)),
  copy_4k_gbps: Number(median(results.copy!).toFixed(3)),
  sab_memcpy_4k_gbps: Number(median(results.sabMemcpy!).toFixed(3)),
  copy_vs_sab_memcpy: Number((median(results.copy!) / median(results.sabMemcpy!)).toFixed(3)),
  copy_4k_js_gbps: Number(median(results.copyJs!).toFixed(3)),
  memcpy_4k_gbps: Number(median(results.memcpy!).toFixed(3)),
};
const cpuMed = (k: string): number => median(cpuRates[k] ?? [0]);
console.log(
  `per CPU-second of this process (medians): split1 ${(cpuMed("split1") / 1e6).toFixed(2)} M/s, split3 ${(cpuMed("split3") / 1e6).toFixed(2)} M/s, split1 batched ${(cpuMed("split1Batched") / 1e6).toFixed(2)} M/s, packed1 ${(cpuMed("packed1") / 1e6).toFixed(2)} M/s, into: split1 ${(cpuMed("split1Into") / 1e6).toFixed(2)} split3 ${(cpuMed("split3Into") / 1e6).toFixed(2)} packed1 ${(cpuMed("packed1Into") / 1e6).toFixed(2)} M/s, copy ${((cpuMed("copy") * 8192) / 1e9).toFixed(2)} GB/s, SAB memcpy ${((cpuMed("sabMemcpy") * 8192) / 1e9).toFixed(2)} GB/s, copy (JS path) ${((cpuMed("copyJs") * 8192) / 1e9).toFixed(2)} GB/s, Buffer.copy ${((cpuMed("memcpy") * 8192) / 1e9).toFixed(2)} GB/s`,
);
console.log(`load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} on ${os.cpus().length} CPUs`);
console.log(
  `copy/SAB memcpy ${out.copy_vs_sab_memcpy.toFixed(2)} (target >= 0.9), copy/Buffer.copy ${(out.copy_4k_gbps / out.memcpy_4k_gbps).toFixed(2)}, ` +
    `JS path/Buffer.copy ${(out.copy_4k_js_gbps / out.memcpy_4k_gbps).toFixed(2)}; split 1-desc target >= 2e6/s`,
);
console.log(JSON.stringify(out));
