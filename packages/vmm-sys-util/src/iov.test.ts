// readvFd / writevFd / nativeReadv / nativeWritev over real fds: a FIFO opened O_RDWR |
// O_NONBLOCK (one fd both ends, so an empty one answers EAGAIN) and an eventfd. Every case
// checks the bytes that moved, not only the return value.
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, constants as fsConstants, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { constants } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, IOV_BATCH_MAX, IovTable, MmapRegion, iovBatchRing, liveMappingCount, nativeReadv, nativeWritev, readvFd, writevFd, type NativeIov } from "./index.js";
import { native as nativeAddon } from "./native.js";

const nativeRaw = (): { iovTable(...a: unknown[]): unknown; writevTable(fd: number, t: unknown, n: number): number } =>
  nativeAddon() as unknown as { iovTable(...a: unknown[]): unknown; writevTable(fd: number, t: unknown, n: number): number };

/** liveMappingCount() once full GCs stop changing it. */
async function settledMappings(): Promise<number> {
  let last = -1;
  let stable = 0;
  await gcUntil(() => {
    const n = liveMappingCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
    return stable >= 3;
  });
  return last;
}
import { codeOf } from "../test/code-of.js";
import { gcUntil } from "../test/fixtures/gc.js";

const { EAGAIN, EBADF, ECANCELED, EINVAL, ERANGE } = constants.errno;

interface ResizableArrayBuffer extends ArrayBuffer {
  resize(n: number): void;
}
const RAB = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ResizableArrayBuffer;

function pattern(n: number, seed = 1): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 31 + seed) & 0xff;
  return a;
}

const concat = (views: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(views.reduce((s, v) => s + v.length, 0));
  let off = 0;
  for (const v of views) {
    out.set(v, off);
    off += v.length;
  }
  return out;
};

/**
 * A FIFO opened O_RDWR | O_NONBLOCK (one fd both ends, so an empty one answers EAGAIN) in a new
 * directory for each test of the block: `set` gets its fd.
 */
function fifoEachTest(prefix: string, set: (fd: number) => void): void {
  let dir = "";
  let fd = -1;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    const path = join(dir, "fifo");
    execFileSync("mkfifo", [path]);
    fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
    set(fd);
  });
  afterEach(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
}

/** `n` bytes of pattern(n, seed) in a SharedArrayBuffer. */
const shared = (n: number, seed = 1): Uint8Array => {
  const v = new Uint8Array(new SharedArrayBuffer(n));
  v.set(pattern(n, seed));
  return v;
};

describe("readv / writev on a FIFO", () => {
  let fd: number;
  fifoEachTest("vsu-iov-", (f) => (fd = f));

  it("gathers pieces in order and scatters them back (arrays, arguments, shared and guest memory)", () => {
    const region = MmapRegion.anonymous(65536);
    try {
      const guest = new Uint8Array(region.buffer);
      guest.set(pattern(3000, 7), 1000);
      const pieces = [pattern(12, 2), guest.subarray(1000, 4000), Buffer.from(pattern(5, 9))];
      expect(writevFd(fd, pieces)).toBe(3017);
      const sab = new Uint8Array(new SharedArrayBuffer(100));
      const into = [new Uint8Array(10), guest.subarray(20000, 23000), sab];
      expect(readvFd(fd, into)).toBe(3017);
      expect(concat(into).subarray(0, 3017)).toEqual(concat(pieces));
      expect(sab.subarray(7)).toEqual(new Uint8Array(93)); // only 7 bytes were left for it

      // The argument form, and the array form with a count (the rest of the array ignored).
      const w = nativeWritev();
      const r = nativeReadv();
      expect(w(fd, pattern(4, 1), pattern(6, 2))).toBe(10);
      expect(w(fd, [pattern(3, 3), pattern(99, 4)], 1)).toBe(3);
      const a = new Uint8Array(7);
      const b = new Uint8Array(6);
      expect(r(fd, a, b)).toBe(13);
      expect(concat([a, b])).toEqual(concat([pattern(4, 1), pattern(6, 2), pattern(3, 3)]));
    } finally {
      region.close();
    }
  });

  it("answers an empty non-blocking fd with \"again\" (-EAGAIN from the raw call, no exception)", () => {
    expect(readvFd(fd, [new Uint8Array(8)])).toBe("again");
    expect(nativeReadv()(fd, new Uint8Array(8))).toBe(-EAGAIN);
    expect(nativeReadv()(fd, [new Uint8Array(8)])).toBe(-EAGAIN);
  });

  it("takes more pieces than fit on the addon's stack (up to IOV_MAX), and refuses more", () => {
    const many = Array.from({ length: 1024 }, (_, i) => pattern(1, i));
    expect(writevFd(fd, many)).toBe(1024);
    const back = Array.from({ length: 1024 }, () => new Uint8Array(1));
    // The argument form with 1024 views (the type wants at least one: `first` then `...more`).
    const spread = (call: NativeIov, views: Uint8Array[]): number => call(fd, views[0] as Uint8Array, ...views.slice(1));
    expect(spread(nativeReadv(), back)).toBe(1024);
    expect(concat(back)).toEqual(concat(many));
    const tooMany = [...many, new Uint8Array(1)];
    expect(nativeWritev()(fd, tooMany)).toBe(-EINVAL);
    expect(spread(nativeWritev(), tooMany)).toBe(-EINVAL);
    expect(codeOf(() => writevFd(fd, tooMany))).toBe("InvalidArgument");
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again"); // nothing was written
  });

  it("a view outside its buffer (a shrunk resizable buffer, a detached one) gets no byte", () => {
    const rab = new RAB(64, { maxByteLength: 64 });
    const fixed = new Uint8Array(rab, 32, 32);
    rab.resize(40);
    const detached = new Uint8Array(16);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(writevFd(fd, [pattern(20, 5)])).toBe(20);
    const tail = new Uint8Array(20);
    expect(readvFd(fd, [fixed, detached, tail])).toBe(20);
    expect(tail).toEqual(pattern(20, 5));
  });

  it("returns -EINVAL for bad arguments and never throws, whatever it is given", () => {
    const r = nativeReadv() as unknown as (...args: unknown[]) => number;
    const v = new Uint8Array(4);
    const bad: unknown[][] = [
      [],
      [fd],
      [-1, v],
      [1.5, v],
      [2 ** 31, v],
      ["3", v],
      [fd, "x"],
      [fd, {}],
      [fd, [v, "x"]],
      [fd, [v, new Uint16Array(2)]],
      [fd, [v], 2],
      [fd, [v], -1],
      [fd, [v], 0.5],
      [fd, v, [v]],
      [fd, v, new DataView(new ArrayBuffer(4))],
    ];
    for (const args of bad) expect(r(...args)).toBe(-EINVAL);
    // A getter that throws: a status, not an exception.
    const hostile = [v];
    Object.defineProperty(hostile, 1, { get: () => { throw new Error("no"); }, enumerable: true });
    expect(r(fd, hostile)).toBe(-EINVAL);
    // A getter that detaches the buffer of a view already looked at: no access to freed memory.
    const early = new Uint8Array(64);
    const sneaky: Uint8Array[] = [early];
    Object.defineProperty(sneaky, 1, { get: () => (structuredClone(early.buffer, { transfer: [early.buffer] }), new Uint8Array(4)) });
    expect(writevFd(fd, [pattern(4, 8)])).toBe(4);
    expect(r(fd, sneaky)).toBe(4);
    expect(early.length).toBe(0);
    // Nothing went wrong in the fd: what was left reads as usual.
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again");
  });
});

describe("readv / writev errors", () => {
  it("reports the system call's errno: EBADF on a closed fd, EINVAL for a short eventfd read", () => {
    const e = new EventFd();
    const fd = e.fd;
    e.write(5n);
    // An eventfd reads 8 bytes or fails with EINVAL: the kernel's error, not an argument error.
    expect(codeOf(() => readvFd(fd, [new Uint8Array(4)]))).toBe("EINVAL");
    const got = new Uint8Array(8);
    expect(readvFd(fd, [got.subarray(0, 3), got.subarray(3)])).toBe(8);
    expect(new DataView(got.buffer).getBigUint64(0, true)).toBe(5n);
    e.close();
    expect(nativeReadv()(fd, new Uint8Array(8))).toBe(-EBADF);
    expect(codeOf(() => readvFd(fd, [new Uint8Array(8)]))).toBe("EBADF");
    expect(codeOf(() => writevFd(fd, [new Uint8Array(8)]))).toBe("EBADF");
  });
});

describe("IovTable: views registered once, (view, offset, length) triples per call", () => {
  let fd: number;
  fifoEachTest("vsu-iov-table-", (f) => (fd = f));

  it("writes the pieces of guest memory and a header copy in the order of the triples, and reads them back", () => {
    const region = MmapRegion.anonymous(65536);
    try {
      const guest = new Uint8Array(region.buffer);
      guest.set(pattern(4000, 3));
      const hdr = shared(12, 5);
      const t = IovTable.create([hdr, guest], 8);
      expect(t.spans.length).toBe(24);
      // hdr, guest [100, +1500), guest [3000, +7), an empty piece, hdr [4, +2); a sixth triple unused
      t.spans.set([0, 0, 12, 1, 100, 1500, 1, 3000, 7, 1, 50, 0, 0, 4, 2, 9, 9, 9]);
      expect(t.writev(fd, 5)).toBe(1521);
      const want = concat([hdr, guest.subarray(100, 1600), guest.subarray(3000, 3007), hdr.subarray(4, 6)]);
      const into = shared(4096);
      const r = IovTable.create([into], 2);
      // Scatter into [2000, +21) then [10, +1500) of one view: the triples decide the order.
      r.spans.set([0, 2000, 21, 0, 10, 1500]);
      expect(r.readv(fd, 2)).toBe(1521);
      expect(concat([into.subarray(2000, 2021), into.subarray(10, 1510)])).toEqual(want);
      expect(r.readv(fd, 1)).toBe(-EAGAIN);
    } finally {
      region.close();
    }
  });

  it("checks every triple on every call: -EINVAL or -ERANGE, and no byte moves", () => {
    const v = shared(64, 1);
    const t = IovTable.create([v, v.subarray(10, 20)], 4);
    const bad: [string, number[], number, number][] = [
      ["count past the table", [0, 0, 1], 5, -EINVAL],
      ["view index past the views", [2, 0, 1], 1, -EINVAL],
      ["negative view index", [-1, 0, 1], 1, -EINVAL],
      ["fractional view index", [0.5, 0, 1], 1, -EINVAL],
      ["NaN offset", [0, Number.NaN, 1], 1, -EINVAL],
      ["negative length", [0, 0, -1], 1, -EINVAL],
      ["fractional length", [0, 0, 1.5], 1, -EINVAL],
      ["infinite offset", [0, Infinity, 0], 1, -EINVAL],
      ["offset past the view", [0, 65, 0], 1, -ERANGE],
      ["piece past the view's end", [0, 60, 5], 1, -ERANGE],
      ["piece past a sub-view's end (its own length counts)", [1, 5, 6], 1, -ERANGE],
      ["huge length", [0, 1, 2 ** 53 - 1], 1, -ERANGE],
      ["a later triple bad", [0, 0, 8, 0, 0, 65], 2, -ERANGE],
    ];
    for (const [what, triples, count, want] of bad) {
      t.spans.fill(0);
      t.spans.set(triples);
      expect([what, t.writev(fd, count)]).toEqual([what, want]);
    }
    t.spans.set([0, 0, 1]);
    expect(t.writev(-1, 1)).toBe(-EINVAL);
    expect(t.writev(fd, -1)).toBe(-EINVAL);
    expect(t.writev(fd, 1.5)).toBe(-EINVAL);
    // Nothing reached the FIFO.
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again");
    // count 0 writes nothing; a sub-view's offsets are its own.
    expect(t.writev(fd, 0)).toBe(0);
    t.spans.set([1, 2, 2]);
    expect(t.writev(fd, 1)).toBe(2);
    const got = new Uint8Array(2);
    expect(readvFd(fd, [got])).toBe(2);
    expect(got).toEqual(v.subarray(12, 14));
  });

  it("refuses a view that could be detached or shrink, and ids that name no table of this thread", () => {
    const v = shared(16);
    // A growable SharedArrayBuffer is refused too: V8 calls it resizable, whatever it does to its memory.
    const growable = new Uint8Array(new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(16, { maxByteLength: 64 }));
    for (const views of [[new Uint8Array(16)], [Buffer.alloc(16)], [new Uint16Array(new SharedArrayBuffer(16))], [new Uint8Array(new RAB(16, { maxByteLength: 32 }))], [growable], [], Array.from({ length: 9 }, () => v)]) {
      expect(codeOf(() => IovTable.create(views as Uint8Array[]))).toBe("InvalidArgument");
    }
    for (const m of [0, 1025, 1.5, Number.NaN]) expect(codeOf(() => IovTable.create([v], m))).toBe("InvalidArgument");
    const raw = nativeRaw();
    expect(raw.iovTable(new Float64Array(3), v)).toBe(-EINVAL); // spans over an ArrayBuffer
    const t = IovTable.create([v], 1);
    t.spans.set([0, 0, 4]);
    for (const notTable of [0, 2 ** 31, 0x7fff_ffff, -1, 1.5, "1", {}, null]) expect(raw.writevTable(fd, notTable, 1)).toBe(-EINVAL);
    t.close();
    expect(t.closed).toBe(true);
    expect(t.writev(fd, 1)).toBe(-EINVAL);
    t.close(); // idempotent
    expect(readvFd(fd, [new Uint8Array(1)])).toBe("again");
  });

  it("holds its buffers' memory: a mapping outlives the region and every view while the table lives", async () => {
    const before = await settledMappings();
    let region: MmapRegion | undefined = MmapRegion.anonymous(65536);
    new Uint8Array(region.buffer).set(pattern(4096, 9), 1000);
    const t = IovTable.create([new Uint8Array(region.buffer)], 1);
    region.close();
    region = undefined;
    // Nothing but the table refers to the mapping: it stays, and its bytes are still there.
    expect(await settledMappings()).toBe(before + 1);
    t.spans.set([0, 1100, 50]);
    expect(t.writev(fd, 1)).toBe(50);
    const got = new Uint8Array(50);
    expect(readvFd(fd, [got])).toBe(50);
    expect(got).toEqual(pattern(4096, 9).subarray(100, 150));
    // close() lets it go (once the buffer object is collected too); so does a dropped table.
    t.close();
    expect(await settledMappings()).toBe(before);
    let t2: IovTable | undefined = IovTable.create([new Uint8Array(MmapRegion.anonymous(4096).buffer)], 1);
    expect(liveMappingCount()).toBe(before + 1);
    t2 = undefined;
    expect(await settledMappings()).toBe(before);
  });

  it("knows only the ids it made: any other number is refused", () => {
    const mine = IovTable.create([shared(8)], 1);
    mine.spans.set([0, 0, 8]);
    expect(mine.writev(fd, 1)).toBe(8);
    expect(readvFd(fd, [new Uint8Array(8)])).toBe(8);
    expect(nativeRaw().writevTable(fd, 1_000_000, 0)).toBe(-EINVAL);
    mine.close();
  });

  it("answers the system call's errno (EBADF)", () => {
    const e = new EventFd();
    const closed = e.fd;
    e.close();
    const t = IovTable.create([shared(8)], 1);
    t.spans.set([0, 0, 8]);
    expect(t.writev(closed, 1)).toBe(-EBADF);
    expect(t.readv(closed, 1)).toBe(-EBADF);
  });
});

for (const ring of [true, false]) {
  describe(`IovTable.writevBatch: several writes in one call (${ring ? "io_uring where the kernel allows it" : "the writev loop"})`, () => {
    let fd: number;
    fifoEachTest("vsu-iov-batch-", (f) => (fd = f));
    beforeEach(() => {
      iovBatchRing(ring);
    });
    afterEach(() => {
      iovBatchRing(true);
    });

    it(`${ring ? "submits through io_uring on this kernel" : "loops when turned off"}, and the messages go out in order, each its pieces`, () => {
      // A kernel with io_uring on (io_uring_disabled 0, as CI's) must give a ring; one with it off, none.
      const disabled = existsSync("/proc/sys/kernel/io_uring_disabled") ? Number(readFileSync("/proc/sys/kernel/io_uring_disabled", "utf8")) : 0;
      expect(iovBatchRing()).toBe(ring && disabled === 0);
      const hdr = shared(36, 7);
      const guest = shared(8192, 3);
      const t = IovTable.create([hdr, guest], 16);
      // Three messages: hdr[0,12) + guest[100,+1000); hdr[12,24) + guest[5000,+7) + guest[10,+3); hdr[24,36).
      t.spans.set([0, 0, 12, 1, 100, 1000, 0, 12, 12, 1, 5000, 7, 1, 10, 3, 0, 24, 12]);
      const io = new Int32Array([2, 3, 1]);
      expect(t.writevBatch(fd, 3, io)).toBe(0);
      expect([...io]).toEqual([1012, 22, 12]);
      const got = new Uint8Array(2000);
      expect(readvFd(fd, [got])).toBe(1046);
      const want = concat([hdr.subarray(0, 12), guest.subarray(100, 1100), hdr.subarray(12, 24), guest.subarray(5000, 5007), guest.subarray(10, 13), hdr.subarray(24, 36)]);
      expect(got.subarray(0, 1046)).toEqual(want);
      t.close();
    });

    it("stops at the first failed write: it has its errno, later ones -ECANCELED and not written", () => {
      const e = new EventFd();
      try {
        const v = new Uint8Array(new SharedArrayBuffer(24));
        new DataView(v.buffer).setBigUint64(0, 5n, true);
        new DataView(v.buffer).setBigUint64(16, 7n, true);
        const t = IovTable.create([v], 4);
        // An eventfd takes 8-byte writes: 5, then 4 bytes (EINVAL), then 7 (not written).
        t.spans.set([0, 0, 8, 0, 8, 4, 0, 16, 8]);
        const io = new Int32Array([1, 1, 1]);
        expect(t.writevBatch(e.fd, 3, io)).toBe(0);
        expect([...io]).toEqual([8, -EINVAL, -ECANCELED]);
        expect(e.read()).toBe(5n);
        t.close();
      } finally {
        e.close();
      }
    });

    it("a full pipe: -EAGAIN for the first message that does not fit, the rest -ECANCELED (no wait for room)", () => {
      const filler = new Uint8Array(4096);
      while (writevFd(fd, [filler]) !== "again");
      const t = IovTable.create([shared(64)], 4);
      t.spans.set([0, 0, 64, 0, 0, 64, 0, 0, 64]); // three: the ring takes batches of three and more
      const io = new Int32Array([1, 1, 1]);
      expect(t.writevBatch(fd, 3, io)).toBe(0);
      expect([...io]).toEqual([-EAGAIN, -ECANCELED, -ECANCELED]);
      t.close();
    });

    it("checks every count and triple before it writes anything: -EINVAL or -ERANGE, io unchanged", () => {
      const t = IovTable.create([shared(64)], 4);
      t.spans.set([0, 0, 8, 0, 8, 8, 0, 60, 8]); // the third triple runs past the view
      const cases: [string, number, number[], number][] = [
        ["n 0", 0, [1], -EINVAL],
        ["n over the batch maximum", IOV_BATCH_MAX + 1, [1], -EINVAL],
        ["n over io's length", 3, [1, 1], -EINVAL],
        ["a count of 0", 2, [1, 0], -EINVAL],
        ["a negative count", 1, [-1], -EINVAL],
        ["counts past the table's spans", 2, [3, 2], -EINVAL],
        ["a bad triple in a later message", 2, [1, 2], -ERANGE],
      ];
      for (const [what, n, counts, want] of cases) {
        const io = new Int32Array(counts);
        expect([what, t.writevBatch(fd, n, io)]).toEqual([what, want]);
        expect([what, [...io]]).toEqual([what, counts]);
      }
      expect(t.writevBatch(-1, 1, new Int32Array([1]))).toBe(-EINVAL);
      const raw = nativeAddon() as unknown as { writevTableBatch(...a: unknown[]): number };
      expect(raw.writevTableBatch(fd, 999_999, 1, new Int32Array([1]))).toBe(-EINVAL);
      expect(raw.writevTableBatch(fd, 1, 1, [1])).toBe(-EINVAL);
      expect(raw.writevTableBatch(fd, 1, 1, new Uint32Array([1]))).toBe(-EINVAL);
      expect(readvFd(fd, [new Uint8Array(1)])).toBe("again"); // nothing was written
      t.close();
      expect(t.writevBatch(fd, 1, new Int32Array([1]))).toBe(-EINVAL);
    });
  });
}
