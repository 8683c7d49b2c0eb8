/**
 * Fuzz: random mutations of a real bzImage's first pages and of a real ELF's
 * headers (plus synthetic images when the kernel is not available). Whatever
 * the input, the loader throws nothing but LoaderError, and anything it does
 * accept is inside guest memory. Each pass is bounded in time.
 */
import { readFileSync } from "node:fs";
import { debianKernel, describeWith } from "@ts-vmm/test-utils";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BootParams, BzImage, Elf, LoaderError, planLinuxBoot } from "../src/index.js";
import { makeBzImage, makeElf, memory, pvhNote } from "./fixtures.js";

/** Milliseconds per fuzz pass: 1.5 s in `pnpm test`, longer with `pnpm fuzz` (TS_VMM_FUZZ_MS). */
const BUDGET_MS = Number(process.env["TS_VMM_FUZZ_MS"] ?? 1500);
/**
 * Deadline of one case: a case slower than this fails the pass (the pass budget alone
 * let a slow input eat the budget and pass with fewer runs). Checked when the case
 * returns: the loader is synchronous, so a case that never returns is still caught
 * only by vitest's test timeout.
 */
const CASE_MS = Number(process.env["TS_VMM_FUZZ_CASE_MS"] ?? 2000);

/** Runs `exercise` and fails if that one case took longer than CASE_MS. */
function timedExercise(image: Uint8Array): boolean {
  const t0 = performance.now();
  const ok = exercise(image);
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw new Error(`one fuzz case took ${ms.toFixed(0)} ms (deadline ${CASE_MS} ms); image of ${image.byteLength} bytes`);
  return ok;
}
const MEM = memory(128 << 20);

/** Runs every parser and the whole boot plan; returns false when a LoaderError was thrown. */
function exercise(image: Uint8Array): boolean {
  try {
    if (image[0] === 0x7f) {
      const e = Elf.parse(image);
      for (const s of e.segments) {
        expect(s.offset + s.fileSize).toBeLessThanOrEqual(image.byteLength);
        expect(s.paddr + s.memSize).toBeLessThanOrEqual(2 ** 52);
      }
    } else {
      const bz = BzImage.parse(image);
      BootParams.fromBzImage(bz);
      expect(bz.kernelOffset).toBeLessThan(image.byteLength);
    }
    const plan = planLinuxBoot(MEM, { kernel: image, initrd: new Uint8Array(4096), cmdline: "console=ttyS0" });
    for (const w of plan.writes) expect(MEM.checkRange(w.addr, w.data.byteLength + (w.zeroFill ?? 0))).toBe(true);
    return true;
  } catch (e) {
    if (!(e instanceof LoaderError)) throw new Error(`not a LoaderError: ${String(e)}`, { cause: e });
    expect(e.message.length).toBeGreaterThan(10);
    return false;
  }
}

/**
 * Mutates `image` in place at offsets below `window` (1-8 random bytes, or a
 * random 16/32/64-bit value at a header field), runs `exercise`, restores the
 * bytes. Sometimes truncates instead. Stops after `budget` ms.
 */
function mutateLoop(image: Uint8Array, windows: readonly [number, number][], budget: number, seed: number): { runs: number; accepted: number } {
  let s = seed >>> 0;
  const rnd = (n: number): number => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s % n;
  };
  const start = Date.now();
  let runs = 0;
  let accepted = 0;
  while (Date.now() - start < budget) {
    runs++;
    if (rnd(20) === 0) {
      const [lo, hi] = windows[rnd(windows.length)]!;
      if (timedExercise(image.subarray(0, lo + rnd(hi - lo)))) accepted++;
      continue;
    }
    const saved: [number, number][] = [];
    const n = 1 + rnd(8);
    for (let i = 0; i < n; i++) {
      const [lo, hi] = windows[rnd(windows.length)]!;
      const off = lo + rnd(hi - lo);
      const width = [1, 1, 2, 4, 8][rnd(5)]!;
      for (let j = 0; j < width && off + j < image.length; j++) {
        saved.push([off + j, image[off + j]!]);
        image[off + j] = rnd(4) === 0 ? [0, 0xff, 0x7f, 0x80][rnd(4)]! : rnd(256);
      }
    }
    try {
      if (timedExercise(image)) accepted++;
    } finally {
      for (const [o, v] of saved.reverse()) image[o] = v;
    }
  }
  return { runs, accepted };
}

describe("fuzz: synthetic images", () => {
  it("bzImage and ELF mutations throw only LoaderError", () => {
    const bz = makeBzImage({ kernelSize: 0x2000 });
    const elf = makeElf({ segments: [{ paddr: 0x200000n, filesz: 0x100n, memsz: 0x200n }, { paddr: 0x300000n, filesz: 0x40n, memsz: 0x40n }], notes: [pvhNote(0x200010)] });
    const a = mutateLoop(bz, [[0x1f0, 0x270], [0, bz.length]], BUDGET_MS / 2, 1);
    const b = mutateLoop(elf, [[0, elf.length]], BUDGET_MS / 2, 2);
    expect(a.runs).toBeGreaterThan(100);
    expect(b.runs).toBeGreaterThan(100);
  }, BUDGET_MS * 2 + 30_000);

  it("arbitrary bytes throw only LoaderError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.boolean(), (bytes, elfMagic) => {
        if (elfMagic && bytes.length >= 4) bytes.set([0x7f, 0x45, 0x4c, 0x46]);
        timedExercise(bytes);
      }),
      { numRuns: 500 },
    );
  });
});

describeWith({ tools: ["apt-get", "dpkg-deb", "zstd"] }, "fuzz: the Debian kernel", () => {
  it("mutating the bzImage's setup sectors and first kernel page throws only LoaderError", async () => {
    const bz = new Uint8Array(readFileSync((await debianKernel()).bzImage));
    const original = Buffer.from(bz.subarray(0, 0x6000));
    const r = mutateLoop(bz, [[0x1f0, 0x270], [0, 0x6000]], BUDGET_MS, 3);
    expect(Buffer.from(bz.subarray(0, 0x6000)).equals(original)).toBe(true);
    expect(r.runs).toBeGreaterThan(20);
    expect(r.accepted).toBeGreaterThan(0); // most single-byte mutations outside the header still load
  }, BUDGET_MS * 4 + 60_000);

  it("mutating the vmlinux's ELF header, program headers and notes throws only LoaderError", async () => {
    const elf = new Uint8Array(readFileSync((await debianKernel()).vmlinux));
    const e = Elf.parse(elf);
    const v = new DataView(elf.buffer, elf.byteOffset);
    const phnum = v.getUint16(56, true);
    // The PT_NOTE segment, where the PVH note lives.
    let note: [number, number] = [0, 64];
    for (let i = 0; i < phnum; i++) {
      const o = 64 + i * 56;
      if (v.getUint32(o, true) === 4) note = [Number(v.getBigUint64(o + 8, true)), Number(v.getBigUint64(o + 8, true) + v.getBigUint64(o + 32, true))];
    }
    expect(e.pvhEntry).toBeDefined();
    const r = mutateLoop(elf, [[0, 64], [64, 64 + phnum * 56], note], BUDGET_MS, 4);
    expect(r.runs).toBeGreaterThan(10);
    expect(Elf.parse(elf).pvhEntry).toBe(e.pvhEntry);
  }, BUDGET_MS * 4 + 60_000);
});
