// Fuzz-style property tests: whatever a caller passes, the API either works or throws a
// VmmSysError; the addon, called directly, either works, returns -errno, or throws a
// TypeError/RangeError. Never a crash. File descriptors used here are either created by the
// test or far above any open fd, so a "valid" random call cannot close or truncate a real file.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventFd, FdWatcher, MmapRegion, VmmSysError, closeFd, ftruncate, installKickSignal, memfdCreate, openTap, pollFd, tapSetOffload, tgkill } from "./index.js";
import { native } from "./native.js";

const HIGH_FD = 900_000; // above any fd this process has (RLIMIT_NOFILE is lower)

function typedOrOk(fn: () => unknown): void {
  try {
    const r = fn();
    if (r instanceof MmapRegion) r.close();
    if (r instanceof EventFd) r.close();
  } catch (err) {
    if (!(err instanceof VmmSysError)) throw err;
    expect(typeof err.code).toBe("string");
  }
}

/** Anything, including numbers at the edges and shapes that look almost right. */
const junk = fc.oneof(
  fc.anything(),
  fc.constantFrom(0, -0, -1, 1.5, Number.NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, Number.MAX_SAFE_INTEGER, 4096, "4096", 4096n, -1n),
  fc.integer(),
  fc.double(),
);

describe("argument fuzzing (public API)", () => {
  it("MmapRegion factories: a region or a VmmSysError", () => {
    fc.assert(
      fc.property(fc.oneof(junk, fc.integer({ min: 1, max: 1 << 20 })), fc.oneof(fc.constant(undefined), junk, fc.record({ shared: junk, hugetlb: junk, noReserve: junk, madviseHugepage: junk, name: junk, offset: junk, readOnly: junk }, { requiredKeys: [] })), (size, opts) => {
        typedOrOk(() => MmapRegion.anonymous(size as number, opts as object));
        typedOrOk(() => MmapRegion.memfd(size as number, opts as object));
        typedOrOk(() => MmapRegion.fromFd(HIGH_FD, size as number, opts as object));
      }),
      { numRuns: 300 },
    );
  });

  it("madvise/msync on a live and a closed region: ok or VmmSysError", () => {
    const r = MmapRegion.anonymous(16 * 4096, { shared: false });
    const closed = MmapRegion.anonymous(4096);
    closed.close();
    fc.assert(
      fc.property(fc.oneof(junk, fc.integer({ min: 0, max: 20 }).map((p) => p * 4096)), fc.oneof(junk, fc.integer({ min: 1, max: 20 * 4096 })), fc.oneof(junk, fc.constantFrom("dontneed", "willneed", "nohugepage", "hugepage", "remove")), (off, len, advice) => {
        typedOrOk(() => r.madvise(off as number, len as number, advice as "dontneed"));
        typedOrOk(() => r.msync(off as number, len as number));
        typedOrOk(() => closed.madvise(off as number, len as number, advice as "dontneed"));
      }),
      { numRuns: 300 },
    );
    r.close();
  });

  it("fd functions, EventFd, FdWatcher, signals, tap: ok or VmmSysError", () => {
    const e = new EventFd();
    fc.assert(
      fc.property(junk, junk, (a, b) => {
        typedOrOk(() => memfdCreate(a as string, b as object));
        typedOrOk(() => closeFd(typeof a === "number" && a >= 0 && a < HIGH_FD ? HIGH_FD : (a as number)));
        typedOrOk(() => ftruncate(typeof a === "number" && a >= 0 && a < HIGH_FD ? HIGH_FD : (a as number), b as number));
        typedOrOk(() => new EventFd(a as object));
        typedOrOk(() => e.write(a as number));
        typedOrOk(() => pollFd(HIGH_FD, a as object, 0));
        typedOrOk(() => FdWatcher.watch(HIGH_FD, a as object, b as () => void));
        typedOrOk(() => installKickSignal(typeof a === "number" ? a : undefined));
        typedOrOk(() => tgkill(typeof a === "number" && a > 0 ? 0x7fff_fff0 : (a as number), b as number));
        typedOrOk(() => openTap({ name: a as string, vnetHdr: b as boolean }));
        typedOrOk(() => tapSetOffload(HIGH_FD, a as number));
      }),
      { numRuns: 300 },
    );
    e.tryRead();
    e.close();
  });
});

describe("argument fuzzing (the addon called directly)", () => {
  const n = native();
  const safeFd = (v: unknown): unknown => (typeof v === "number" && v >= 0 && v < HIGH_FD ? HIGH_FD : v);

  function nativeOk(fn: () => unknown): void {
    try {
      const r = fn();
      expect(["number", "bigint", "string", "object"]).toContain(typeof r);
    } catch (err) {
      expect(err instanceof TypeError || err instanceof RangeError).toBe(true);
    }
  }

  it("every export validates its arguments", () => {
    const r = MmapRegion.anonymous(4 * 4096, { shared: false });
    fc.assert(
      fc.property(junk, junk, junk, junk, (a, b, c, d) => {
        const A = a as number;
        nativeOk(() => n.memfdCreate(a as string, b as number));
        nativeOk(() => n.close(safeFd(a) as number));
        nativeOk(() => n.ftruncate(safeFd(a) as number, b as number));
        nativeOk(() => n.eventfdRead(safeFd(a) as number));
        nativeOk(() => n.eventfdWrite(safeFd(a) as number, b as bigint));
        nativeOk(() => n.poll(safeFd(a) as number, b as number, 0));
        // The buffer argument must be a mapping made by the addon, and the range inside it.
        nativeOk(() => n.madvise(a as SharedArrayBuffer, b as number, c as number, d as number));
        nativeOk(() => n.madvise(r.buffer, b as number, c as number, 4 /* MADV_DONTNEED */));
        // Random advice on a real mapping: only harmless advice gets through (no MADV_HWPOISON).
        nativeOk(() => n.madvise(r.buffer, 0, 4096, typeof d === "number" ? d : 100));
        new Uint8Array(r.buffer)[0] = 1; // still accessible
        nativeOk(() => n.msync(r.buffer, b as number, c as number, d as number));
        nativeOk(() => n.disownFd(a as SharedArrayBuffer));
        nativeOk(() => n.tgkill(a as number, b as number));
        nativeOk(() => n.installNoopHandler(A));
        // A created timer stays disarmed; ids near 2^31 are never ours (EBADF), so nothing fires.
        nativeOk(() => n.threadTimerCreate(A));
        nativeOk(() => n.threadTimerSet(typeof a === "number" ? 0x7fff_0000 : (a as number), b as number, c as number));
        nativeOk(() => n.threadTimerDelete(typeof a === "number" ? 0x7fff_0000 : (a as number)));
        nativeOk(() => n.tunSetIff(safeFd(a) as number, b as string, c as number));
        nativeOk(() => n.tapSetOffload(safeFd(a) as number, b as number));
        nativeOk(() => n.pollCreate(safeFd(a) as number, b as () => void));
      }),
      { numRuns: 300 },
    );
    r.close();
  });

  it("mmap with random lengths and flags never maps over existing memory", () => {
    fc.assert(
      fc.property(fc.integer({ min: -2, max: 1 << 16 }), fc.integer({ min: 0, max: 0x1_0000 }), fc.integer({ min: 0, max: 7 }), (len, flags, prot) => {
        // MAP_ANONYMOUS | random flags; MAP_FIXED(_NOREPLACE) must be refused by the addon.
        nativeOk(() => {
          const res = n.mmap(-1, len, prot === 7 ? 3 : prot, flags | 0x20, 0, false);
          if (Array.isArray(res)) expect(res[0]).toBeInstanceOf(SharedArrayBuffer);
          return res;
        });
        if (flags & 0x10) expect(() => n.mmap(-1, 4096, 3, flags | 0x20, 0, false)).toThrow(RangeError);
        if (prot !== 3) expect(() => n.mmap(-1, 4096, prot, 0x21, 0, false)).toThrow(RangeError);
      }),
      { numRuns: 300 },
    );
  });
});
