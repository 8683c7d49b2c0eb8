import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { afterAll, describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";

const MiB = 1 << 20;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof GuestMemoryError ? e.code : `other: ${String(e)}`;
  }
  return "none";
}

/** Bytes of the file allocated on its file system (st_blocks are 512-byte units). */
function allocated(fd: number): number {
  return fstatSync(fd).blocks * 512;
}

/** A field of /proc/self/status in bytes (VmRSS, RssShmem, RssAnon, RssFile). */
function status(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/self/status", "latin1"));
  if (!m) throw new Error(`no ${field} in /proc/self/status`);
  return Number(m[1]) * 1024;
}

function fill(mem: GuestMemoryMmap, addr: number, len: number, v: number): void {
  mem.write(addr, new Uint8Array(len).fill(v));
}

describe("GuestMemoryMmap.discardRange on memfd memory", () => {
  it("frees the memfd's blocks and the process's RSS for the range, which then reads zeros; the rest is untouched", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 32 * MiB }], { dirtyTracking: true });
    const fd = mem.regions[0]!.fd!;
    fill(mem, 0, 32 * MiB, 0x5a);
    expect(allocated(fd)).toBeGreaterThanOrEqual(32 * MiB);
    const rss0 = status("RssShmem");
    mem.clearDirty();
    expect(mem.discardGranularity()).toBe(4096);
    mem.discardRange(8 * MiB, 16 * MiB);
    const freed = 32 * MiB - allocated(fd);
    expect(freed).toBe(16 * MiB);
    // RSS is process-wide (other allocations move it): at least 15 of the 16 MiB must be gone.
    expect(rss0 - status("RssShmem")).toBeGreaterThan(15 * MiB);
    expect(mem.readU8(8 * MiB)).toBe(0);
    expect(mem.readU8(24 * MiB - 1)).toBe(0);
    expect(mem.readU8(8 * MiB - 1)).toBe(0x5a);
    expect(mem.readU8(24 * MiB)).toBe(0x5a);
    // Discarded pages are dirty (their contents changed); others are not.
    const dirty = [...mem.dirtyPages()];
    expect(dirty.length).toBe(4096);
    expect(dirty[0]).toBe(8 * MiB);
    // Touching a discarded page allocates it again.
    mem.writeU8(8 * MiB, 1);
    const again = allocated(fd) - 16 * MiB;
    expect(again).toBeGreaterThanOrEqual(4096);
    expect(again).toBeLessThanOrEqual(64 * 1024);
    mem.close();
  });

  it("spans contiguous regions (a range above MAX_REGION_SIZE is several) and discards in each", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 * MiB }, { start: 4 * MiB, size: 4 * MiB }]);
    fill(mem, 0, 8 * MiB, 1);
    const [a, b] = mem.regions;
    mem.discardRange(3 * MiB, 2 * MiB);
    expect(allocated(a!.fd!)).toBe(3 * MiB);
    expect(allocated(b!.fd!)).toBe(3 * MiB);
    expect(mem.readU8(3 * MiB)).toBe(0);
    expect(mem.readU8(5 * MiB - 1)).toBe(0);
    expect(mem.readU8(5 * MiB)).toBe(1);
    mem.close();
  });

  it("checks everything before the first syscall: a bad range discards nothing", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 * MiB }, { start: 8 * MiB, size: 4 * MiB }]);
    fill(mem, 0, 4 * MiB, 9);
    fill(mem, 8 * MiB, 4 * MiB, 9);
    const fds = mem.regions.map((r) => r.fd!);
    const before = fds.map(allocated);
    expect(code(() => mem.discardRange(0x800, 4096))).toBe("Unaligned");
    expect(code(() => mem.discardRange(0, 4097))).toBe("Unaligned");
    expect(code(() => mem.discardRange(5 * MiB, 4096))).toBe("Hole");
    expect(code(() => mem.discardRange(2 * MiB, 4 * MiB))).toBe("OutOfBounds"); // runs into the hole at 4 MiB
    expect(code(() => mem.discardRange(8 * MiB, 8 * MiB))).toBe("OutOfBounds"); // past the end of memory
    expect(code(() => mem.discardRange(2 ** 52, 4096))).toBe("AddressTooLarge");
    expect(code(() => mem.discardRange(-4096, 4096))).toBe("InvalidArgument");
    expect(code(() => mem.discardRange(0, -4096))).toBe("InvalidArgument");
    expect(code(() => mem.discardRange(0, 1.5))).toBe("InvalidArgument");
    expect(code(() => mem.discardRange("0" as unknown as number, 4096))).toBe("InvalidArgument");
    expect(code(() => mem.discardRange(0, 0))).toBe("none"); // empty, at a backed address
    expect(code(() => mem.discardRange(5 * MiB, 0))).toBe("Hole");
    expect(fds.map(allocated)).toEqual(before);
    expect(mem.readU8(2 * MiB)).toBe(9);
    mem.close();
    expect(code(() => mem.discardRange(0, 4096))).toBe("Closed");
    expect(code(() => mem.discardGranularity())).toBe("Closed");
  });

  it("refuses on a memory rebuilt from a transferable (it does not own the mappings)", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: MiB }]);
    const copy = GuestMemoryMmap.fromTransferable(mem.toTransferable());
    expect(code(() => copy.discardRange(0, 4096))).toBe("DiscardUnsupported");
    expect(code(() => copy.discardGranularity())).toBe("DiscardUnsupported");
    mem.close();
  });

  it("records each region's backing", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: MiB }]);
    expect(mem.regions[0]!.backing).toEqual({ kind: "memfd", shared: true, pageSize: 4096 });
    mem.close();
    const anon = GuestMemoryMmap.fromRanges([{ start: 0, size: MiB }], { backing: "anonymous" });
    expect(anon.regions[0]!.backing).toEqual({ kind: "anonymous", shared: true, pageSize: 4096 });
    anon.close();
  });
});

describe("GuestMemoryMmap.discardRange on other backings", () => {
  const dir = mkdtempSync(join(tmpdir(), "vm-memory-discard-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("shared anonymous memory (shmem): MADV_REMOVE gives the pages back", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 16 * MiB }], { backing: "anonymous" });
    fill(mem, 0, 16 * MiB, 3);
    const rss0 = status("RssShmem");
    mem.discardRange(0, 16 * MiB);
    expect(rss0 - status("RssShmem")).toBeGreaterThan(15 * MiB);
    expect(mem.readU32(0)).toBe(0);
    mem.close();
  });

  it("a shared file: the file's blocks are punched out (size kept), it reads zeros", () => {
    const path = join(dir, "shared.img");
    writeFileSync(path, Buffer.alloc(8 * MiB, 0x11));
    const fd = openSync(path, "r+");
    try {
      const mem = GuestMemoryMmap.fromFile(fd, [{ start: 0, size: 8 * MiB }]);
      expect(mem.regions[0]!.backing).toEqual({ kind: "file", shared: true, pageSize: 4096 });
      expect(allocated(fd)).toBeGreaterThanOrEqual(8 * MiB);
      mem.discardRange(2 * MiB, 4 * MiB);
      expect(allocated(fd)).toBeLessThanOrEqual(4 * MiB + 64 * 1024);
      expect(fstatSync(fd).size).toBe(8 * MiB);
      expect(mem.readU8(2 * MiB)).toBe(0);
      expect(mem.readU8(6 * MiB)).toBe(0x11);
      mem.close();
      const back = readFileSync(path);
      expect(back[3 * MiB]).toBe(0);
      expect(back[7 * MiB]).toBe(0x11);
    } finally {
      closeSync(fd);
    }
  });

  it("a private file mapping: MADV_DONTNEED drops the private copies (RSS falls), the range reads the file again, the file is unchanged", () => {
    const path = join(dir, "private.img");
    writeFileSync(path, Buffer.alloc(16 * MiB, 0x22));
    const fd = openSync(path, "r+");
    try {
      const mem = GuestMemoryMmap.fromFile(fd, [{ start: 0, size: 16 * MiB }], { shared: false });
      expect(mem.regions[0]!.backing).toEqual({ kind: "file", shared: false, pageSize: 4096 });
      fill(mem, 0, 16 * MiB, 0x33); // copy-on-write: 16 MiB of private anonymous pages
      const anon0 = status("RssAnon");
      mem.discardRange(0, 16 * MiB);
      expect(anon0 - status("RssAnon")).toBeGreaterThan(15 * MiB);
      expect(mem.readU8(0)).toBe(0x22);
      expect(mem.readU8(16 * MiB - 1)).toBe(0x22);
      mem.close();
      expect(readFileSync(path).every((b) => b === 0x22)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  it("needs no fd: a file-backed region whose fd was closed (or reused) is discarded through its own mapping", () => {
    const path = join(dir, "closed-fd.img");
    writeFileSync(path, Buffer.alloc(MiB, 1));
    const other = join(dir, "other.img");
    writeFileSync(other, Buffer.alloc(MiB, 2));
    const wfd = openSync(path, "r+");
    const mem = GuestMemoryMmap.fromFile(wfd, [{ start: 0, size: MiB }]);
    closeSync(wfd);
    const reused = openSync(other, "r+"); // most likely gets wfd's number
    try {
      mem.discardRange(0, 4096);
      expect(mem.readU8(0)).toBe(0);
      mem.close();
      expect(readFileSync(path)[0]).toBe(0);
      expect(readFileSync(path)[4096]).toBe(1);
      expect(readFileSync(other).every((b) => b === 2)).toBe(true);
    } finally {
      closeSync(reused);
    }
  });
});

/** Huge pages free in the default pool. */
function hugeFree(): number {
  return Number(/^HugePages_Free:\s+(\d+)/m.exec(readFileSync("/proc/meminfo", "latin1"))?.[1] ?? 0);
}

describeWith({ root: true }, "GuestMemoryMmap.discardRange on hugetlb memory (reserves 4 huge pages)", () => {
  it("knows the 2 MiB page size, refuses a partial huge page, frees whole ones", () => {
    const nrPath = "/proc/sys/vm/nr_hugepages";
    const before = Number(readFileSync(nrPath, "latin1"));
    const fd = openSync(nrPath, "w");
    try {
      writeSync(fd, String(before + 4));
    } finally {
      closeSync(fd);
    }
    try {
      const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 * MiB }], { hugetlb: true });
      const huge = mem.regions[0]!.backing!.pageSize;
      expect(huge).toBeGreaterThan(4096);
      expect(mem.discardGranularity()).toBe(huge);
      fill(mem, 0, 4 * MiB, 7);
      const free0 = hugeFree();
      expect(code(() => mem.discardRange(0, 4096))).toBe("Unaligned");
      expect(code(() => mem.discardRange(huge / 2, huge))).toBe("Unaligned");
      expect(mem.readU8(0)).toBe(7);
      mem.discardRange(0, huge);
      expect(hugeFree() - free0).toBe(1);
      expect(mem.readU8(0)).toBe(0);
      expect(mem.readU8(huge)).toBe(7);
      mem.close();
    } finally {
      const w = openSync(nrPath, "w");
      try {
        writeSync(w, String(before));
      } finally {
        closeSync(w);
      }
    }
  });
});

describe("fdPageSize", () => {
  it("gives a plain file's mapping the page size smaps reports for it, and 0 for an fd that is not open", async () => {
    const { fdPageSize, kernelPageSize } = await import("./discard.js");
    const d = mkdtempSync(join(tmpdir(), "vm-memory-pagesize-"));
    try {
      const path = join(d, "m.img");
      writeFileSync(path, Buffer.alloc(MiB));
      const fd = openSync(path, "r");
      try {
        const mem = GuestMemoryMmap.fromFile(fd, [{ start: 0, size: MiB }], { shared: false });
        const r = mem.regions[0]!;
        expect(fdPageSize(fd)).toBe(4096);
        expect(kernelPageSize(r.hostAddress!)).toBe(fdPageSize(fd));
        expect(r.backing!.pageSize).toBe(4096);
        mem.close();
      } finally {
        closeSync(fd);
      }
      expect(fdPageSize(fd)).toBe(0);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
