// The hugetlb path with real huge pages (issue 16): the test reserves a pool,
// maps guest memory on it, checks /proc/self/smaps shows huge pages, and gives
// the pool back. Also: THP on private anonymous memory, and prefaulting.
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describeWith } from "@ts-vmm/test-utils";
import { readHugePagePool, reserveHugePages, residentPages, smapsEntry } from "@ts-vmm/test-utils/node";
import { describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";

const MiB = 1 << 20;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Full GCs with turns of the loop between them until done() (a mapping is unmapped when its last buffer is collected). */
async function gcUntil(done: () => boolean): Promise<boolean> {
  for (let i = 0; i < 50 && !done(); i++) {
    await new Promise((r) => setTimeout(r, 10));
    gc();
  }
  return done();
}

function checkHugeMemory(before: { total: number; free: number; reserved: number }): void {
  const mem = GuestMemoryMmap.fromRanges(
    [{ start: 0, size: 8 * MiB }, { start: 0x1_0000_0000, size: 4 * MiB }],
    { hugetlb: true, hugePageSize: 2 * MiB, name: "huge-test" },
  );
  try {
    mem.writeU64(0x1_0000_0000 + 4 * MiB - 8, 0x1122334455667788n);
    mem.writeU32(6 * MiB, 0xabcdef01);
    expect(mem.readU64(0x1_0000_0000 + 4 * MiB - 8)).toBe(0x1122334455667788n);
    expect(mem.readU32(6 * MiB)).toBe(0xabcdef01);
    for (const r of mem.regions) {
      const e = smapsEntry(r.hostAddress!);
      expect(e, `smaps entry of region 0x${r.start.toString(16)}`).toBeDefined();
      expect(e!.name).toContain("memfd:huge-test");
      expect(e!["KernelPageSize"]).toBe(2048);
      expect(e!["MMUPageSize"]).toBe(2048);
    }
    // Two pages touched (one per region); the shared mappings reserved all six at mmap.
    const during = readHugePagePool(2 * MiB)!;
    expect(before.free - during.free).toBe(2);
    expect(during.reserved - before.reserved).toBe(4);
  } finally {
    mem.close();
  }
}

describeWith({ root: true }, "hugetlb guest memory on a pool the test reserves", () => {
  it("2 MiB pages: every region is hugetlb in smaps, reads and writes work, the pool is given back", async () => {
    const before = readHugePagePool(2 * MiB)!;
    const res = reserveHugePages(8);
    try {
      expect(res.added).toBe(8);
      checkHugeMemory(readHugePagePool(2 * MiB)!);
    } finally {
      expect(await res.settle(), "every reserved huge page went back to the pool").toBe(true);
    }
    // The pages in use stay (as surplus) until the mappings are collected, then the pool is back.
    expect(await gcUntil(() => readHugePagePool(2 * MiB)!.total === before.total)).toBe(true);
    expect(readHugePagePool(2 * MiB)!.reserved).toBe(before.reserved);
  });

  it("a size that is not a multiple of the huge page is Mmap (EINVAL) and leaves nothing mapped", async () => {
    const res = reserveHugePages(2);
    try {
      let err: unknown;
      try {
        GuestMemoryMmap.fromRanges([{ start: 0, size: 2 * MiB }, { start: 4 * MiB, size: 3 * MiB }], { hugetlb: true, hugePageSize: 2 * MiB });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GuestMemoryError);
      expect((err as GuestMemoryError).code).toBe("Mmap");
      expect(((err as GuestMemoryError).cause as { code: string }).code).toBe("EINVAL");
    } finally {
      expect(await res.settle(), "every reserved huge page went back to the pool").toBe(true);
    }
  });
});

describe("private anonymous memory, THP and prefault", () => {
  it("shared: false with THP advice and populate: resident, huge where THP is on, no fd", () => {
    const thp = readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8");
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 16 * MiB }], {
      backing: "anonymous", shared: false, madviseHugepage: true, populate: true,
    });
    try {
      const r = mem.regions[0]!;
      expect(r.fd).toBeNull();
      expect(residentPages(r.hostAddress!, r.size)).toBe(r.size / 4096);
      if (!thp.includes("[never]")) expect(smapsEntry(r.hostAddress!)!["AnonHugePages"]).toBeGreaterThanOrEqual(12 * 1024);
      mem.writeU8(16 * MiB - 1, 5);
      expect(mem.readU8(16 * MiB - 1)).toBe(5);
    } finally {
      mem.close();
    }
  });
  it("populate on memfd memory: all of it resident before the first access", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 * MiB }], { populate: true });
    const lazy = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 * MiB }]);
    try {
      expect(residentPages(mem.regions[0]!.hostAddress!, 4 * MiB)).toBe(1024);
      expect(residentPages(lazy.regions[0]!.hostAddress!, 4 * MiB)).toBe(0);
    } finally {
      mem.close();
      lazy.close();
    }
  });
});
