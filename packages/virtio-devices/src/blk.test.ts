import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { bringUp, rd, rig, wr, type Rig } from "../test/driver.js";
import { ManualClock } from "../test/manual-clock.js";
import {
  MMIO,
  STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VirtioBlock,
  VirtioDeviceError,
  RateLimiter,
  type VirtioBlockOptions,
} from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vblk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HDR = 0x200000;
const STATUS = 0x201000;
const DATA = 0x300000;
const SECTORS = 2048; // 1 MiB image

function image(fill: (b: Uint8Array) => void = (b) => b.forEach((_, i) => (b[i] = (i * 13 + 7) & 0xff))): string {
  const p = join(dir, `img-${Math.random().toString(36).slice(2)}.raw`);
  const b = new Uint8Array(SECTORS * 512);
  fill(b);
  writeFileSync(p, b);
  return p;
}

interface Blk extends Rig {
  readonly dev: VirtioBlock;
  readonly q: MockSplitQueue;
  readonly path: string;
}

function blk(opts: VirtioBlockOptions = {}, features = VIRTIO_F_VERSION_1, path = image()): Blk {
  const dev = VirtioBlock.open(path, opts);
  const r = rig(dev);
  const [q] = bringUp(r, features);
  return { ...r, dev, q: q!, path };
}

function header(b: Blk, type: number, sector: bigint, at = HDR): void {
  b.mem.writeU32(at, type);
  b.mem.writeU32(at + 4, 0);
  b.mem.writeU64(at + 8, sector);
}

/** Sends one request and returns [status byte, used len] (status 0xee if untouched). */
function submit(b: Blk, type: number, sector: bigint, data: { addr: number; len: number; writable: boolean }[] = []): [number, number] | undefined {
  header(b, type, sector);
  b.mem.writeU8(STATUS, 0xee);
  b.q.addChain([{ addr: HDR, len: 16 }, ...data, { addr: STATUS, len: 1, writable: true }]);
  b.t.notify(0);
  const used = b.q.takeUsed();
  if (used.length === 0) return undefined;
  return [b.mem.readU8(STATUS), used[0]!.len];
}

function fileBytes(path: string, off: number, len: number): Uint8Array {
  return new Uint8Array(readFileSync(path)).subarray(off, off + len);
}

describe("virtio-blk data path on a real file", () => {
  it("reports capacity, blk_size and seg_max in config", () => {
    const b = blk();
    expect(b.dev.capacity).toBe(BigInt(SECTORS));
    const d = new Uint8Array(8);
    b.t.read(MMIO.Config, d);
    expect(new DataView(d.buffer).getBigUint64(0, true)).toBe(BigInt(SECTORS));
    b.t.read(MMIO.Config + 20, d.subarray(0, 4));
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(512);
  });

  it("reads sectors straight into guest memory, across several buffers", () => {
    const b = blk();
    const expected = fileBytes(b.path, 3 * 512, 1536);
    expect(submit(b, VIRTIO_BLK_T_IN, 3n, [{ addr: DATA, len: 512, writable: true }, { addr: DATA + 0x10000, len: 1024, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 1537]);
    const got = new Uint8Array(1536);
    b.mem.read(DATA, got.subarray(0, 512));
    b.mem.read(DATA + 0x10000, got.subarray(512));
    expect(got).toEqual(expected);
    expect(b.dev.stats).toMatchObject({ ok: 1, readBytes: 1536, writeBytes: 0 });
  });

  it("writes reach the file; FLUSH succeeds", () => {
    const b = blk();
    const w = new Uint8Array(4096).map((_, i) => (i * 31) & 0xff);
    b.mem.write(DATA, w);
    expect(submit(b, VIRTIO_BLK_T_OUT, 100n, [{ addr: DATA, len: 4096, writable: false }])).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(submit(b, VIRTIO_BLK_T_FLUSH, 0n)).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(fileBytes(b.path, 100 * 512, 4096)).toEqual(w);
    expect(b.dev.stats).toMatchObject({ ok: 2, readBytes: 0, writeBytes: 4096 });
  });

  it("GET_ID writes the id (20 bytes max)", () => {
    const b = blk({ id: "disk-one" });
    expect(submit(b, VIRTIO_BLK_T_GET_ID, 0n, [{ addr: DATA, len: 20, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 21]);
    const id = new Uint8Array(20);
    b.mem.read(DATA, id);
    expect(new TextDecoder().decode(id).replace(/\0+$/, "")).toBe("disk-one");
  });

  it("DISCARD punches a hole and WRITE_ZEROES zeroes (with and without UNMAP); the size stays", () => {
    const b = blk();
    const seg = (sector: bigint, num: number, flags: number): void => {
      b.mem.writeU64(DATA, sector);
      b.mem.writeU32(DATA + 8, num);
      b.mem.writeU32(DATA + 12, flags);
    };
    seg(8n, 8, 0);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(fileBytes(b.path, 8 * 512, 4096).every((x) => x === 0)).toBe(true);
    seg(40n, 3, 0);
    expect(submit(b, VIRTIO_BLK_T_WRITE_ZEROES, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(fileBytes(b.path, 40 * 512, 1536).every((x) => x === 0)).toBe(true);
    expect(fileBytes(b.path, 43 * 512, 1)[0]).not.toBe(undefined);
    seg(80n, 1, 1);
    expect(submit(b, VIRTIO_BLK_T_WRITE_ZEROES, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(fileBytes(b.path, 80 * 512, 512).every((x) => x === 0)).toBe(true);
    expect(statSync(b.path).size).toBe(SECTORS * 512);
    // Bad segments: flags on DISCARD, a range past the end, zero sectors, not a multiple of 16.
    seg(0n, 1, 1);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_UNSUPP, 1]);
    seg(BigInt(SECTORS) - 1n, 2, 0);
    expect(submit(b, VIRTIO_BLK_T_WRITE_ZEROES, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    seg(0xffff_ffff_ffff_fff0n, 0x20, 0);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    seg(0n, 0, 0);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 12, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
  });

  it("a read-only image offers RO, refuses writes, discards and write-zeroes with IOERR and leaves the file alone", () => {
    const path = image();
    const before = readFileSync(path);
    const b = blk({ readOnly: true }, VIRTIO_F_VERSION_1, path);
    expect(b.dev.deviceFeatures & VIRTIO_BLK_F_RO).toBe(VIRTIO_BLK_F_RO);
    b.mem.write(DATA, new Uint8Array(512).fill(0x77));
    expect(submit(b, VIRTIO_BLK_T_OUT, 0n, [{ addr: DATA, len: 512, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    b.mem.writeU64(DATA, 0n);
    b.mem.writeU32(DATA + 8, 1);
    b.mem.writeU32(DATA + 12, 0);
    expect(submit(b, VIRTIO_BLK_T_DISCARD, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    expect(submit(b, VIRTIO_BLK_T_WRITE_ZEROES, 0n, [{ addr: DATA, len: 16, writable: false }])).toEqual([VIRTIO_BLK_S_IOERR, 1]);
    expect(submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    expect(submit(b, VIRTIO_BLK_T_FLUSH, 0n)).toEqual([VIRTIO_BLK_S_OK, 1]);
    expect(readFileSync(path).equals(before)).toBe(true);
    // The refused write moved no bytes; the read did.
    expect(b.dev.stats).toMatchObject({ ioerr: 3, writeBytes: 0, readBytes: 512 });
  });

  it("async engine: 64 requests in flight at once complete, out of order allowed, all data right", async () => {
    const b = blk({ engine: "async" }, VIRTIO_F_VERSION_1, image());
    // 32 reads of distinct sectors, each with its own header and status.
    const n = 20;
    for (let i = 0; i < n; i++) {
      header(b, VIRTIO_BLK_T_IN, BigInt(i * 8), HDR + i * 32);
      b.mem.writeU8(STATUS + i, 0xee);
      b.q.addChain([{ addr: HDR + i * 32, len: 16 }, { addr: DATA + i * 4096, len: 4096, writable: true }, { addr: STATUS + i, len: 1, writable: true }]);
    }
    b.t.notify(0);
    expect(b.dev.busy()).toBe(true);
    const used: number[] = [];
    for (let tries = 0; tries < 200 && used.length < n; tries++) {
      await new Promise((r) => setTimeout(r, 5));
      used.push(...b.q.takeUsed().map((u) => u.len));
    }
    expect(used).toEqual(new Array(n).fill(4097));
    expect(b.dev.busy()).toBe(false);
    for (let i = 0; i < n; i++) {
      expect(b.mem.readU8(STATUS + i)).toBe(VIRTIO_BLK_S_OK);
      const got = new Uint8Array(4096);
      b.mem.read(DATA + i * 4096, got);
      expect(got).toEqual(fileBytes(b.path, i * 4096, 4096));
    }
  });

  it("async engine: a reset with requests in flight keeps Status non-zero until they end, and they never reach the used ring", async () => {
    const b = blk({ engine: "async" });
    for (let i = 0; i < 8; i++) {
      header(b, VIRTIO_BLK_T_IN, BigInt(i), HDR + i * 32);
      b.q.addChain([{ addr: HDR + i * 32, len: 16 }, { addr: DATA + i * 512, len: 512, writable: true }, { addr: STATUS + i, len: 1, writable: true }]);
    }
    b.t.notify(0);
    wr(b.t, MMIO.Status, 0);
    expect(rd(b.t, MMIO.Status)).not.toBe(0);
    for (let tries = 0; tries < 200 && b.dev.busy(); tries++) await new Promise((r) => setTimeout(r, 5));
    expect(rd(b.t, MMIO.Status)).toBe(0);
    expect(b.q.usedIdx()).toBe(0);
  });
});

describe("virtio-blk bad input: error status or NEEDS_RESET, never OK", () => {
  const cases: [string, (b: Blk) => [number, number] | undefined][] = [
    ["read past the end", (b) => submit(b, VIRTIO_BLK_T_IN, BigInt(SECTORS), [{ addr: DATA, len: 512, writable: true }])],
    ["read straddling the end", (b) => submit(b, VIRTIO_BLK_T_IN, BigInt(SECTORS - 1), [{ addr: DATA, len: 1024, writable: true }])],
    ["sector wrapping 2^64", (b) => submit(b, VIRTIO_BLK_T_IN, 0xffff_ffff_ffff_ffffn, [{ addr: DATA, len: 1024, writable: true }])],
    ["write past the end", (b) => submit(b, VIRTIO_BLK_T_OUT, BigInt(SECTORS), [{ addr: DATA, len: 512, writable: false }])],
    ["length not a multiple of 512", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 100, writable: true }])],
    ["length above the request limit", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: 0, len: 0x300_0000, writable: true }])],
    ["read with device-readable data", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 512, writable: false }])],
    ["write with device-writable data", (b) => submit(b, VIRTIO_BLK_T_OUT, 0n, [{ addr: DATA, len: 512, writable: true }])],
    ["data buffer outside guest memory (2^40)", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: 2 ** 40, len: 4096, writable: true }])],
    ["data buffer running off the end of memory", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: 0x100_0000 - 512, len: 1024, writable: true }])],
    ["write from outside guest memory", (b) => submit(b, VIRTIO_BLK_T_OUT, 0n, [{ addr: 2 ** 40, len: 512, writable: false }])],
    ["flush with data", (b) => submit(b, VIRTIO_BLK_T_FLUSH, 0n, [{ addr: DATA, len: 512, writable: false }])],
    ["GET_ID without a buffer", (b) => submit(b, VIRTIO_BLK_T_GET_ID, 0n)],
    ["GET_ID into memory that is not there", (b) => submit(b, VIRTIO_BLK_T_GET_ID, 0n, [{ addr: 2 ** 40, len: 20, writable: true }])],
    ["unknown type", (b) => submit(b, 99, 0n, [{ addr: DATA, len: 512, writable: true }])],
    ["mixed directions", (b) => submit(b, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 512, writable: false }, { addr: DATA + 512, len: 512, writable: true }])],
    [
      "short header (8 bytes)",
      (b) => {
        b.q.addChain([{ addr: HDR, len: 8 }, { addr: STATUS, len: 1, writable: true }]);
        b.t.notify(0);
        const u = b.q.takeUsed();
        return u.length ? [b.mem.readU8(STATUS), u[0]!.len] : undefined;
      },
    ],
    [
      "header device-writable",
      (b) => {
        b.mem.writeU8(STATUS, 0xee);
        b.q.addChain([{ addr: HDR, len: 16, writable: true }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1, writable: true }]);
        b.t.notify(0);
        const u = b.q.takeUsed();
        return u.length ? [b.mem.readU8(STATUS), u[0]!.len] : undefined;
      },
    ],
    [
      "status descriptor not writable",
      (b) => {
        header(b, VIRTIO_BLK_T_IN, 0n);
        b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1 }]);
        b.t.notify(0);
        const u = b.q.takeUsed();
        return u.length ? [b.mem.readU8(STATUS), u[0]!.len] : undefined;
      },
    ],
    [
      "status byte outside guest memory",
      (b) => {
        header(b, VIRTIO_BLK_T_IN, 0n);
        b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: 2 ** 40, len: 1, writable: true }]);
        b.t.notify(0);
        return b.q.takeUsed().length ? [0, 0] : undefined;
      },
    ],
    [
      "descriptor address wrapping 2^64",
      (b) => {
        header(b, VIRTIO_BLK_T_IN, 0n);
        b.q.writeDescriptor(40, { addr: HDR, len: 16, flags: 1, next: 41 });
        b.q.writeDescriptor(41, { addr: 0xffff_ffff_ffff_f000n, len: 0x2000, flags: 3, next: 42 });
        b.q.writeDescriptor(42, { addr: STATUS, len: 1, flags: 2, next: 0 });
        b.mem.writeU8(STATUS, 0xee);
        b.q.publish(40);
        b.t.notify(0);
        const u = b.q.takeUsed();
        return u.length ? [b.mem.readU8(STATUS), u[0]!.len] : undefined;
      },
    ],
    [
      "indirect table without INDIRECT_DESC negotiated",
      (b) => {
        header(b, VIRTIO_BLK_T_IN, 0n);
        b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1, writable: true }], { indirect: true });
        b.t.notify(0);
        const u = b.q.takeUsed();
        return u.length ? [b.mem.readU8(STATUS), u[0]!.len] : undefined;
      },
    ],
    [
      "avail index far ahead",
      (b) => {
        b.q.setAvailIdx(b.q.size + 3);
        b.t.notify(0);
        return b.q.takeUsed().length ? [0, 0] : undefined;
      },
    ],
  ];
  for (const [name, run] of cases) {
    it(name, () => {
      const b = blk();
      const before = readFileSync(b.path);
      const r = run(b);
      const needsReset = (b.t.status & STATUS_DEVICE_NEEDS_RESET) !== 0;
      if (r === undefined) expect(needsReset).toBe(true);
      else {
        expect(needsReset).toBe(false);
        expect([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP]).toContain(r[0]);
      }
      expect(b.dev.stats.ok).toBe(0);
      expect(readFileSync(b.path).equals(before)).toBe(true);
      // The device recovers after a reset.
      const b2 = { ...b, q: bringUp(b)[0]! };
      expect(submit(b2, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    });
  }

  it("with INDIRECT_DESC negotiated, an indirect request works", () => {
    const b = blk({}, VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC);
    header(b, VIRTIO_BLK_T_IN, 1n);
    b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1, writable: true }], { indirect: true });
    b.t.notify(0);
    expect(b.q.takeUsed().map((u) => u.len)).toEqual([513]);
    expect(b.mem.readU8(STATUS)).toBe(VIRTIO_BLK_S_OK);
  });

  it("a broken queue does not stop another device", () => {
    const a = blk();
    const c = blk();
    a.q.setAvailIdx(a.q.size + 3);
    a.t.notify(0);
    expect(a.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(submit(c, VIRTIO_BLK_T_IN, 0n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
  });
});

describe("virtio-blk fairness", () => {
  it("one notification handles at most 16 MiB (or 256 requests), then yields to the event loop and finishes the rest", async () => {
    const path = image();
    const dev = VirtioBlock.open(path);
    const r = rig(dev);
    const b: Blk = { ...r, dev, q: bringUp(r, VIRTIO_F_VERSION_1, [256])[0]!, path };
    header(b, VIRTIO_BLK_T_IN, 0n);
    // A hostile guest may publish the same chain over and over: 130 reads of 128 KiB.
    b.q.writeDescriptor(0, { addr: HDR, len: 16, flags: 1, next: 1 });
    b.q.writeDescriptor(1, { addr: DATA, len: 128 * 1024, flags: 3, next: 2 });
    b.q.writeDescriptor(2, { addr: STATUS, len: 1, flags: 2, next: 0 });
    for (let i = 0; i < 130; i++) b.q.publish(0);
    b.t.notify(0);
    expect(b.q.takeUsed()).toHaveLength(128);
    await new Promise((r) => setImmediate(r));
    expect(b.q.takeUsed()).toHaveLength(2);
    expect(b.dev.stats.ok).toBe(130);
  });
});

describe("virtio-blk persist", () => {
  it("a transport saved with requests done restores onto the same image and keeps serving; another image is refused", async () => {
    const { MmioTransport } = await import("./index.js");
    const b = blk();
    expect(submit(b, VIRTIO_BLK_T_IN, 1n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    const saved = JSON.parse(JSON.stringify(b.t.state())) as ReturnType<typeof b.t.state>;
    expect(saved.device).toEqual({ deviceType: 2, capacity: String(SECTORS), readOnly: false, rateLimiter: null });
    const dev2 = VirtioBlock.open(b.path);
    const t2 = MmioTransport.fromState(saved, dev2, { mem: b.mem, irq: b.irq });
    const b2 = { ...b, t: t2, dev: dev2 };
    expect(submit(b2, VIRTIO_BLK_T_IN, 2n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    const other = join(dir, "other.raw");
    writeFileSync(other, new Uint8Array(4096));
    expect(() => MmioTransport.fromState(saved, VirtioBlock.open(other), { mem: b.mem, irq: b.irq })).toThrow(expect.objectContaining({ code: "InvalidState" }));
    expect(() => MmioTransport.fromState(saved, VirtioBlock.open(b.path, { readOnly: true }), { mem: b.mem, irq: b.irq })).toThrow(VirtioDeviceError);
  });

  it("state() refuses while async requests are in flight", () => {
    const b = blk({ engine: "async" });
    header(b, VIRTIO_BLK_T_IN, 0n);
    b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 4096, writable: true }, { addr: STATUS, len: 1, writable: true }]);
    b.t.notify(0);
    expect(() => b.t.state()).toThrow(expect.objectContaining({ code: "Busy" }));
  });
});

describe("VirtioBlock.open", () => {
  it("refuses a directory, a missing file and bad options", () => {
    expect(() => VirtioBlock.open(dir)).toThrow(VirtioDeviceError);
    expect(() => VirtioBlock.open(join(dir, "nope"))).toThrow(expect.objectContaining({ code: "Io" }));
    expect(() => VirtioBlock.open(image(), { id: "x".repeat(21) })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => VirtioBlock.open(image(), { engine: "fast" as "sync" })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });

  it("the default GET_ID is the file name cut to 20 bytes, non-ASCII replaced (any file name opens)", () => {
    const p = join(dir, "a-very-long-disk-image-name-\u00e9t\u00e9.raw");
    writeFileSync(p, new Uint8Array(4096));
    const b = blk({}, VIRTIO_F_VERSION_1, p);
    expect(submit(b, VIRTIO_BLK_T_GET_ID, 0n, [{ addr: DATA, len: 20, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 21]);
    const id = new Uint8Array(20);
    b.mem.read(DATA, id);
    expect(new TextDecoder().decode(id)).toBe("a-very-long-disk-ima");
  });

  it("capacity rounds the image size down to whole sectors", () => {
    const p = join(dir, "odd.raw");
    const fd = openSync(p, "w");
    writeSync(fd, new Uint8Array(1000));
    closeSync(fd);
    expect(VirtioBlock.open(p).capacity).toBe(1n);
  });
});

describe("virtio-blk with a rate limiter", () => {
  it("a snapshot keeps the limiter's buckets: the restored device starts with the tokens left, not a full bucket", async () => {
    const { MmioTransport } = await import("./index.js");
    const clock = new ManualClock();
    const cfg = { ops: { size: 2, refillTimeMs: 1000 } };
    const b = blk({ rateLimiter: new RateLimiter(cfg, clock) });
    expect(submit(b, VIRTIO_BLK_T_IN, 1n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    expect(submit(b, VIRTIO_BLK_T_IN, 2n, [{ addr: DATA, len: 512, writable: true }])).toEqual([VIRTIO_BLK_S_OK, 513]);
    const saved = JSON.parse(JSON.stringify(b.t.state())) as ReturnType<typeof b.t.state>;
    expect((saved.device as unknown as { rateLimiter: unknown }).rateLimiter).toEqual({ bandwidth: null, ops: { size: 2, refillTimeMs: 1000, oneTimeBurst: 0, tokens: 0 } });
    const clock2 = new ManualClock();
    const dev2 = VirtioBlock.open(b.path, { rateLimiter: new RateLimiter(cfg, clock2) });
    const t2 = MmioTransport.fromState(saved, dev2, { mem: b.mem, irq: b.irq });
    expect(dev2.rateLimiter!.state().ops?.tokens).toBe(0);
    // The next request waits for the bucket (it would pass at once with a fresh one).
    header(b, VIRTIO_BLK_T_IN, 3n);
    b.q.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1, writable: true }]);
    t2.notify(0);
    expect(b.q.takeUsed()).toHaveLength(0);
    expect(dev2.stats.throttled).toBe(1);
    clock2.advance(1000);
    expect(b.q.takeUsed()).toHaveLength(1);
    // A malformed limiter state is refused.
    const bad = { ...saved, device: { ...saved.device, rateLimiter: { bandwidth: null, ops: { size: 2, refillTimeMs: 1000, oneTimeBurst: 0, tokens: "x" } } } };
    expect(() => MmioTransport.fromState(bad as never, VirtioBlock.open(b.path, { rateLimiter: cfg }), { mem: b.mem, irq: b.irq })).toThrow(expect.objectContaining({ code: "InvalidState" }));
  });

  it("ops bucket: requests beyond it stay in the ring and complete, in order, when the timer fires; none lost", () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter({ ops: { size: 2, refillTimeMs: 100 } }, clock);
    const b = blk({ rateLimiter: limiter });
    const STATUSES = 0x202000;
    for (let i = 0; i < 6; i++) {
      header(b, VIRTIO_BLK_T_IN, BigInt(i), HDR + 16 * i);
      b.mem.writeU8(STATUSES + i, 0xee);
      b.q.addChain([{ addr: HDR + 16 * i, len: 16 }, { addr: DATA + 512 * i, len: 512, writable: true }, { addr: STATUSES + i, len: 1, writable: true }]);
    }
    b.t.notify(0);
    expect(b.q.takeUsed().length).toBe(2);
    expect(b.dev.stats.throttled).toBe(1);
    // A notification while blocked does not pop anything.
    b.t.notify(0);
    expect(b.q.takeUsed().length).toBe(0);
    expect(b.dev.stats.throttled).toBe(1);
    clock.advance(51); // one op back
    expect(b.q.takeUsed().length).toBe(1);
    clock.advance(1000);
    const rest = b.q.takeUsed();
    expect(rest.length).toBe(3);
    for (let i = 0; i < 6; i++) expect(b.mem.readU8(STATUSES + i), `request ${i}`).toBe(VIRTIO_BLK_S_OK);
    expect(fileBytes(b.path, 5 * 512, 512)).toEqual(b.mem.slice(DATA + 5 * 512, 512));
    expect(b.dev.stats.ok).toBe(6);
  });

  it("bandwidth bucket counts data bytes; update() while blocked lets the queue go on at once", () => {
    const clock = new ManualClock();
    const b = blk({ rateLimiter: new RateLimiter({ bandwidth: { size: 1024, refillTimeMs: 1000 } }, clock) });
    const STATUSES = 0x202000;
    for (let i = 0; i < 4; i++) {
      header(b, VIRTIO_BLK_T_IN, BigInt(i), HDR + 16 * i);
      b.q.addChain([{ addr: HDR + 16 * i, len: 16 }, { addr: DATA + 512 * i, len: 512, writable: true }, { addr: STATUSES + i, len: 1, writable: true }]);
    }
    b.t.notify(0);
    expect(b.q.takeUsed().length).toBe(2); // 2 × 512 bytes
    b.dev.rateLimiter!.update({ bandwidth: null });
    clock.advance(0);
    expect(b.q.takeUsed().length).toBe(2);
  });

  it("reset while blocked: the timer is dropped and nothing completes into the old rings", () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter({ ops: { size: 1, refillTimeMs: 100 } }, clock);
    const b = blk({ rateLimiter: limiter });
    for (let i = 0; i < 2; i++) {
      header(b, VIRTIO_BLK_T_IN, BigInt(i), HDR + 16 * i);
      b.q.addChain([{ addr: HDR + 16 * i, len: 16 }, { addr: DATA, len: 512, writable: true }, { addr: STATUS, len: 1, writable: true }]);
    }
    b.t.notify(0);
    expect(b.q.takeUsed().length).toBe(1);
    expect(limiter.blocked).toBe(true);
    wr(b.t, MMIO.Status, 0);
    expect(limiter.blocked).toBe(false);
    clock.advance(1000);
    expect(b.q.usedIdx()).toBe(1); // the second request never completed into the reset rings
    expect(b.dev.stats.ok).toBe(1);
  });

  it("takes a config and makes its own limiter", () => {
    expect(blk({ rateLimiter: { ops: { size: 1, refillTimeMs: 100 } } }).dev.rateLimiter).toBeInstanceOf(RateLimiter);
    expect(blk().dev.rateLimiter).toBeUndefined();
  });

  it("refuses a malformed rate limiter config", () => {
    expect(() => VirtioBlock.open(image(), { rateLimiter: { ops: { size: -1, refillTimeMs: 10 } } })).toThrow(VirtioDeviceError);
  });
});
