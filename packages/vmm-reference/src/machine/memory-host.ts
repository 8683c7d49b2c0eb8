// What this host offers guest memory: KVM's memory capabilities, the hugetlb
// pools and the THP modes. Read once per VM (the sysfs part when first used) and by `ts-vmm host-info`; the
// planner (memory-plan.ts) decides from these facts alone, so tests can hand
// it any host.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Cap, GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP } from "@ts-vmm/kvm-ioctls";

/** One hugetlb pool, from `/sys/kernel/mm/hugepages/hugepages-<size>kB/`. */
export interface HugePagePool {
  /** Page size in bytes. */
  readonly pageSize: number;
  /** nr_hugepages: pages in the pool (persistent and surplus). */
  readonly total: number;
  /** free_hugepages: pages nobody has faulted in (reserved ones included). */
  readonly free: number;
  /** resv_hugepages: free pages promised to existing mappings. */
  readonly reserved: number;
  /** surplus_hugepages: pages above the persistent pool, allocated on demand. */
  readonly surplus: number;
  /** nr_overcommit_hugepages: how many surplus pages the kernel may allocate. */
  readonly overcommit: number;
}

/** The pages a new mapping can count on: free minus reserved, plus the surplus headroom. */
export function availableHugePages(p: HugePagePool): number {
  return Math.max(0, p.free - p.reserved) + Math.max(0, p.overcommit - p.surplus);
}

/** The THP modes (the bracketed word of each sysfs file), or null where the file is absent. */
export interface ThpModes {
  /** `/sys/kernel/mm/transparent_hugepage/enabled`: always, madvise or never (private anonymous memory). */
  readonly enabled: string | null;
  /** `…/shmem_enabled`: always, within_size, advise, never, deny or force (memfd and shared anonymous memory). */
  readonly shmemEnabled: string | null;
  /** `…/defrag`: when a fault may compact memory to find a huge page. */
  readonly defrag: string | null;
}

/** What the guest memory planner needs to know about the host. */
export interface MemoryHostFacts {
  /** KVM_CAP_USER_MEMORY2: KVM_SET_USER_MEMORY_REGION2 exists. */
  readonly userMemory2: boolean;
  /** KVM_CAP_GUEST_MEMFD: KVM_CREATE_GUEST_MEMFD exists. */
  readonly guestMemfd: boolean;
  /** KVM_CAP_GUEST_MEMFD_FLAGS: the GUEST_MEMFD_FLAG_* bits KVM accepts (0 if the capability is absent). */
  readonly guestMemfdFlags: number;
  /** KVM_CAP_PRE_FAULT_MEMORY: KVM_PRE_FAULT_MEMORY exists. */
  readonly preFaultMemory: boolean;
  /** The hugetlb pools, smallest page first. */
  readonly hugePagePools: readonly HugePagePool[];
  /** The THP modes. */
  readonly thp: ThpModes;
}

/** Anything that answers KVM_CHECK_EXTENSION: a `Kvm` (system answers) or a `VmFd` (answers for its VM type). */
export interface CapabilitySource {
  /** KVM_CHECK_EXTENSION. */
  checkExtension(cap: number): number;
}

/** GUEST_MEMFD_FLAG_MMAP as a number. */
export const GMEM_MMAP = Number(GUEST_MEMFD_FLAG_MMAP);
/** GUEST_MEMFD_FLAG_INIT_SHARED as a number. */
export const GMEM_INIT_SHARED = Number(GUEST_MEMFD_FLAG_INIT_SHARED);

/** Names of the GUEST_MEMFD_FLAG_* bits set in `flags`, and of unknown bits as hex. */
export function guestMemfdFlagNames(flags: number): string[] {
  const out: string[] = [];
  if (flags & GMEM_MMAP) out.push("MMAP");
  if (flags & GMEM_INIT_SHARED) out.push("INIT_SHARED");
  const rest = flags & ~(GMEM_MMAP | GMEM_INIT_SHARED);
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out;
}

function bracketed(path: string): string | null {
  try {
    return /\[([^\]]+)\]/.exec(readFileSync(path, "utf8"))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Reads the hugetlb pools under `sysfs` (default `/sys`), smallest page first; none if hugetlbfs is absent. */
export function readHugePagePools(sysfs = "/sys"): HugePagePool[] {
  const dir = join(sysfs, "kernel/mm/hugepages");
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const pools: HugePagePool[] = [];
  for (const name of names) {
    const m = /^hugepages-(\d+)kB$/.exec(name);
    if (!m) continue;
    const n = (f: string): number => {
      try {
        const v = Number(readFileSync(join(dir, name, f), "utf8").trim());
        return Number.isSafeInteger(v) && v >= 0 ? v : 0;
      } catch {
        return 0;
      }
    };
    pools.push({
      pageSize: Number(m[1]) * 1024,
      total: n("nr_hugepages"),
      free: n("free_hugepages"),
      reserved: n("resv_hugepages"),
      surplus: n("surplus_hugepages"),
      overcommit: n("nr_overcommit_hugepages"),
    });
  }
  return pools.sort((a, b) => a.pageSize - b.pageSize);
}

/** Reads the THP modes under `sysfs` (default `/sys`). */
export function readThpModes(sysfs = "/sys"): ThpModes {
  const dir = join(sysfs, "kernel/mm/transparent_hugepage");
  return { enabled: bracketed(join(dir, "enabled")), shmemEnabled: bracketed(join(dir, "shmem_enabled")), defrag: bracketed(join(dir, "defrag")) };
}

/**
 * The facts of this host: KVM's answers from `kvm` (a `VmFd` gives those of its
 * VM type) now, the pools and THP modes from sysfs when first read (then kept).
 * @throws a `KvmError` if KVM_CHECK_EXTENSION itself fails (a closed fd).
 */
export function readMemoryHostFacts(kvm: CapabilitySource, sysfs = "/sys"): MemoryHostFacts {
  const cap = (c: number): number => Math.max(0, kvm.checkExtension(c));
  const guestMemfd = cap(Cap.GUEST_MEMFD) > 0;
  // The sysfs facts are read when first asked for (~0.2 ms of file reads that a
  // plan without huge pages, such as a snapshot restore's, never looks at), once.
  let pools: HugePagePool[] | undefined;
  let thp: ThpModes | undefined;
  return {
    userMemory2: cap(Cap.USER_MEMORY2) > 0,
    guestMemfd,
    guestMemfdFlags: guestMemfd ? cap(Cap.GUEST_MEMFD_FLAGS) : 0,
    preFaultMemory: cap(Cap.PRE_FAULT_MEMORY) > 0,
    get hugePagePools(): HugePagePool[] {
      pools ??= readHugePagePools(sysfs);
      return pools;
    },
    get thp(): ThpModes {
      thp ??= readThpModes(sysfs);
      return thp;
    },
  };
}
