// Huge page sizes and prefaulting (issue 16): what the reference VMM's memory
// backends are built on. smaps is the witness: KernelPageSize and *_Hugetlb
// for hugetlb pages, AnonHugePages for THP, Rss before any touch for populate.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { reserveHugePages, residentPages, smapsEntry } from "@ts-vmm/test-utils/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MmapRegion, VmmSysError, memfdCreate, closeFd } from "./index.js";

const MiB = 1 << 20;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof VmmSysError) return e.code;
    throw e;
  }
  return "no error";
}

function smaps(r: MmapRegion): Record<string, number> {
  const e = smapsEntry(r.address);
  if (e === undefined) throw new Error(`no smaps entry at 0x${r.address.toString(16)}`);
  return e;
}

describe("hugePageSize and populate: argument checks", () => {
  it("refuses a page size that is not a power of two in [64 KiB, 2 GiB], or without hugetlb", () => {
    for (const s of [0, 3 * MiB, 4096, 2 ** 32, 1.5, -2 * MiB, "2M"]) {
      expect(code(() => MmapRegion.memfd(2 * MiB, { hugetlb: true, hugePageSize: s as number }))).toBe("InvalidArgument");
      expect(code(() => MmapRegion.anonymous(2 * MiB, { hugetlb: true, hugePageSize: s as number }))).toBe("InvalidArgument");
      expect(code(() => memfdCreate("x", { hugetlb: true, hugePageSize: s as number }))).toBe("InvalidArgument");
    }
    expect(code(() => MmapRegion.memfd(2 * MiB, { hugePageSize: 2 * MiB }))).toBe("InvalidArgument");
    expect(code(() => MmapRegion.anonymous(2 * MiB, { hugePageSize: 2 * MiB }))).toBe("InvalidArgument");
    expect(code(() => MmapRegion.memfd(MiB, { populate: "yes" as unknown as boolean }))).toBe("InvalidArgument");
  });
  it("a page size the kernel has no pool for is its errno, not a crash", () => {
    // 64 KiB is a valid encoding but no x86 pool: memfd_create refuses it (ENODEV: no hugetlbfs of that size).
    expect(code(() => memfdCreate("x", { hugetlb: true, hugePageSize: 64 * 1024 }))).toMatch(/^E(NODEV|INVAL)$/);
  });
});

describe("populate", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "vsu-populate-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("memfd, anonymous private and a shared file are resident before any touch; without it they are not", () => {
    const size = 8 * MiB;
    const path = join(dir, "f");
    writeFileSync(path, Buffer.alloc(size, 1));
    const fd = openSync(path, "r+");
    try {
      const made = [
        [MmapRegion.memfd(size, { populate: true }), MmapRegion.memfd(size)],
        [MmapRegion.anonymous(size, { shared: false, populate: true }), MmapRegion.anonymous(size, { shared: false })],
        [MmapRegion.fromFd(fd, size, { populate: true }), MmapRegion.fromFd(fd, size, { shared: false })],
      ] as const;
      for (const [pop, lazy] of made) {
        expect(residentPages(pop.address, size)).toBe(size / 4096);
        expect(residentPages(lazy.address, size)).toBeLessThan(size / 4096 / 4);
        pop.close();
        lazy.close();
      }
    } finally {
      closeSync(fd);
    }
  });
  it("a private file mapping with populate takes write faults: the copy is anonymous, the file unchanged", () => {
    const path = join(dir, "p");
    writeFileSync(path, Buffer.alloc(2 * MiB, 7));
    const fd = openSync(path, "r");
    try {
      const r = MmapRegion.fromFd(fd, 2 * MiB, { readOnly: true, populate: true });
      expect(residentPages(r.address, 2 * MiB)).toBe(512);
      new Uint8Array(r.buffer)[0] = 9;
      r.close();
      expect(readFileSync(path)[0]).toBe(7);
    } finally {
      closeSync(fd);
    }
  });
  it("with THP advice the pages are faulted after the advice (AnonHugePages where THP is on)", () => {
    const thp = readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8");
    const size = 16 * MiB;
    const r = MmapRegion.anonymous(size, { shared: false, madviseHugepage: true, populate: true });
    try {
      expect(residentPages(r.address, size)).toBe(size / 4096);
      // The mapping need not start 2 MiB-aligned: at least all but the two edge pieces are huge.
      if (!thp.includes("[never]")) expect(smaps(r)["AnonHugePages"]).toBeGreaterThanOrEqual(size / 1024 - 4096);
    } finally {
      r.close();
    }
  });
  it("madvise populate-read / populate-write on a live region", () => {
    const r = MmapRegion.memfd(4 * MiB);
    expect(residentPages(r.address, 4 * MiB)).toBe(0);
    r.madvise(0, 2 * MiB, "populate-write");
    expect(residentPages(r.address, 4 * MiB)).toBe(512);
    r.madvise(2 * MiB, 2 * MiB, "populate-read");
    expect(residentPages(r.address, 4 * MiB)).toBe(1024);
    r.close();
  });
});

describeWith({ root: true }, "hugetlb pages of a chosen size (the test reserves a pool)", () => {
  it("2 MiB: memfd and anonymous mappings are hugetlb in smaps; the pool drains and refills", async () => {
    const res = reserveHugePages(4);
    try {
      expect(res.added).toBe(4);
      const free0 = Number(readFileSync("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "utf8"));
      const m = MmapRegion.memfd(4 * MiB, { hugetlb: true, hugePageSize: 2 * MiB, populate: true });
      const a = MmapRegion.anonymous(4 * MiB, { shared: false, hugetlb: true, hugePageSize: 2 * MiB });
      new Uint8Array(a.buffer)[0] = 1;
      const em = smaps(m);
      const ea = smaps(a);
      expect(em["KernelPageSize"]).toBe(2048);
      expect(em["Shared_Hugetlb"]! + em["Private_Hugetlb"]!).toBe(4096); // populated: both pages
      expect(ea["KernelPageSize"]).toBe(2048);
      expect(ea["Private_Hugetlb"]).toBe(2048); // one page touched
      const free1 = Number(readFileSync("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "utf8"));
      expect(free0 - free1).toBe(3);
      m.close();
      a.close();
    } finally {
      expect(await res.settle(), "every reserved huge page went back to the pool").toBe(true);
    }
  });
  it("a pool that is too small: the shared mapping's reservation fails at mmap (ENOMEM), never later", async () => {
    const res = reserveHugePages(1);
    try {
      expect(code(() => MmapRegion.memfd(8 * MiB, { hugetlb: true, hugePageSize: 2 * MiB }))).toBe("ENOMEM");
    } finally {
      expect(await res.settle(), "every reserved huge page went back to the pool").toBe(true);
    }
  });
  it("1 GiB: a memfd of 1 GiB pages where the kernel can add one to the pool", async () => {
    let res;
    try {
      res = reserveHugePages(1, 1 << 30);
    } catch (e) {
      throw new Error(`cannot write the 1 GiB pool: ${(e as Error).message}`);
    }
    try {
      if (res.added === 0) {
        // Fragmented memory: the kernel found no free 1 GiB range. The refusal is a typed errno.
        expect(code(() => MmapRegion.memfd(1 << 30, { hugetlb: true, hugePageSize: 1 << 30 }))).toBe("ENOMEM");
        return;
      }
      const fd = memfdCreate("one-gig", { hugetlb: true, hugePageSize: 1 << 30 });
      closeFd(fd);
      const m = MmapRegion.memfd(1 << 30, { hugetlb: true, hugePageSize: 1 << 30 });
      new Uint8Array(m.buffer)[(1 << 30) - 1] = 1;
      const e = smaps(m);
      expect(e["KernelPageSize"]).toBe(1 << 20);
      expect(e["Shared_Hugetlb"]! + e["Private_Hugetlb"]!).toBe(1 << 20);
      m.close();
    } finally {
      expect(await res.settle(), "every reserved huge page went back to the pool").toBe(true);
    }
  });
});
