// Reserving hugetlb pages for a test (root only), and reading the pools.
//
// The pool is machine-wide and other test files (and other sessions) may use it
// at the same time, so a reservation changes nr_hugepages by a delta under a
// lock directory and gives the same delta back, instead of setting and
// restoring an absolute value that a concurrent reservation would clobber.
import { closeSync, mkdirSync, openSync, readFileSync, readSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** One hugetlb pool (`/sys/kernel/mm/hugepages/hugepages-<kB>kB`). */
export interface HugePagePoolState {
  /** Page size in bytes. */
  readonly pageSize: number;
  /** nr_hugepages: pages in the persistent pool. */
  readonly total: number;
  /** free_hugepages: pages not faulted in by anyone (reserved ones included). */
  readonly free: number;
  /** resv_hugepages: free pages promised to existing mappings. */
  readonly reserved: number;
}

const poolDir = (pageSize: number): string => `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;

/** Reads a pool, or undefined if the kernel has no pool of that page size. */
export function readHugePagePool(pageSize: number): HugePagePoolState | undefined {
  const n = (f: string): number => Number(readFileSync(join(poolDir(pageSize), f), "utf8").trim());
  try {
    return { pageSize, total: n("nr_hugepages"), free: n("free_hugepages"), reserved: n("resv_hugepages") };
  } catch {
    return undefined;
  }
}

/** A reservation made by {@link reserveHugePages}. */
export interface HugePageReservation {
  /** Pages the kernel actually added to the pool (it may find fewer contiguous ranges than asked). */
  readonly added: number;
  /**
   * Lowers the pool by the pages not given back yet. Pages in use go back by
   * themselves once unmapped; a free page still reserved by a live mapping
   * cannot, and stays until {@link HugePageReservation.settle}.
   */
  release(): void;
  /**
   * Releases, then garbage-collects (a mapping is unmapped when its last
   * buffer is collected) and lowers the pool again until every added page is
   * gone, including the pages in use that became surplus pages, or `timeoutMs`
   * passes. Resolves to whether all went. Call it instead of (or after)
   * `release()` when the test made mappings: a later reservation would
   * otherwise turn surplus pages still mapped into persistent ones and keep
   * them in the pool for good.
   */
  settle(timeoutMs?: number): Promise<boolean>;
}

let gcFn: (() => void) | undefined;
function gc(): void {
  if (gcFn === undefined) {
    setFlagsFromString("--expose-gc");
    gcFn = runInNewContext("gc") as () => void;
  }
  gcFn();
}

const LOCK = join(tmpdir(), "ts-vmm-hugepages.lock");

function locked<T>(fn: () => T): T {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      if (Date.now() > deadline) throw new Error(`${LOCK} is held for more than 10 s (remove it if no test is running)`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    return fn();
  } finally {
    rmdirSync(LOCK);
  }
}

/**
 * Adds `count` pages of `pageSize` bytes (default 2 MiB) to the hugetlb pool
 * (root only) and returns how many the kernel added; `release()` removes them
 * again. Throws if the pool does not exist or cannot be written.
 */
export function reserveHugePages(count: number, pageSize = 2 << 20): HugePageReservation {
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`count must be a whole number, got ${count}`);
  const file = join(poolDir(pageSize), "nr_hugepages");
  const dir = poolDir(pageSize);
  const num = (f: string): number => Number(readFileSync(join(dir, f), "utf8").trim());
  const added = locked(() => {
    const before = Number(readFileSync(file, "utf8").trim());
    writeFileSync(file, String(before + count));
    return Number(readFileSync(file, "utf8").trim()) - before;
  });
  // Pages of this reservation still in the persistent pool (nr_hugepages − surplus_hugepages).
  // Lowering nr_hugepages turns pages in use into surplus pages, which the kernel frees when
  // they are unmapped; a free page promised to a live mapping stays persistent.
  let remaining = added;
  // Surplus pages when we started: pages this reservation turns into surplus must be gone
  // (unmapped) before settle() is done, or the next reservation would turn them back into
  // persistent pages (raising nr_hugepages converts surplus pages first) and keep them.
  const surplusBaseline = num("surplus_hugepages");
  const lower = (): void => {
    if (remaining === 0) return;
    locked(() => {
      const before = num("nr_hugepages") - num("surplus_hugepages");
      writeFileSync(file, String(Math.max(0, num("nr_hugepages") - remaining)));
      const after = num("nr_hugepages") - num("surplus_hugepages");
      remaining = Math.max(0, remaining - Math.max(0, before - after));
    });
  };
  return {
    added,
    release: lower,
    async settle(timeoutMs = 5000): Promise<boolean> {
      const deadline = Date.now() + timeoutMs;
      const done = (): boolean => remaining === 0 && num("surplus_hugepages") <= surplusBaseline;
      lower();
      while (!done() && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
        gc();
        lower();
      }
      return done();
    },
  };
}

/**
 * The /proc/self/smaps entry of the mapping (VMA) that contains `address`: its
 * fields in kB (`Rss`, `AnonHugePages`, `Shared_Hugetlb`, `Private_Hugetlb`,
 * `KernelPageSize`, ...) and its `name` (e.g. `/memfd:guest-ram (deleted)`), or
 * undefined if nothing is mapped there. `pid` reads another process. The kernel
 * merges adjacent compatible anonymous mappings into one VMA, so its `Rss` may
 * cover more than one mapping: count resident pages with {@link residentPages}.
 */
export function smapsEntry(address: bigint, pid: number | "self" = "self"): (Record<string, number> & { readonly name: string }) | undefined {
  const lines = readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(lines[i]!);
    if (!head || address < BigInt(`0x${head[1]!}`) || address >= BigInt(`0x${head[2]!}`)) continue;
    const out: Record<string, number> = {};
    for (let j = i + 1; j < lines.length; j++) {
      const f = /^(\w+):\s+(\d+) kB$/.exec(lines[j]!);
      if (f) out[f[1]!] = Number(f[2]);
      else if (/^[0-9a-f]+-[0-9a-f]+ /.test(lines[j]!)) break;
    }
    return Object.assign(out, { name: head[3] ?? "" });
  }
  return undefined;
}

/**
 * How many 4 KiB pages of `[address, address + size)` are present in memory,
 * from /proc/self/pagemap (bit 63 of each page's entry; readable without
 * root). A huge page counts as all of its 4 KiB pieces.
 */
export function residentPages(address: bigint, size: number): number {
  const pages = Math.ceil(size / 4096);
  const buf = Buffer.alloc(pages * 8);
  const fd = openSync("/proc/self/pagemap", "r");
  try {
    let done = 0;
    while (done < buf.length) {
      const n = readSync(fd, buf, done, buf.length - done, Number((address / 4096n) * 8n) + done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  let present = 0;
  for (let i = 0; i < pages; i++) if ((buf.readUInt32LE(i * 8 + 4) & 0x8000_0000) !== 0) present++;
  return present;
}
