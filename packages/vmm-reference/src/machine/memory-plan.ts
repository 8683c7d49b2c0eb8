// Checks a guest memory request against the host's facts and decides how to
// build it, before anything is mapped: a request this host cannot serve is
// refused with one sentence naming what is missing (a KVM capability, free
// huge pages, a THP mode), never discovered later as a failed mapping or a
// SIGBUS in the guest. Pure: facts in, plan or refusal out.
import { GMEM_INIT_SHARED, GMEM_MMAP, availableHugePages, guestMemfdFlagNames, type MemoryHostFacts } from "./memory-host.js";
import type { GuestMemoryOptions, HugePages, MemoryBackend } from "./memory-config.js";

const MiB = 1024 * 1024;

/** How the planner decided to build guest memory. */
export interface MemoryPlan {
  /** Guest RAM in bytes. */
  readonly bytes: number;
  /**
   * What maps it: a memfd (`"memfd"`, shared), private anonymous memory
   * (`"anonymous"`), a KVM guest_memfd, or a file.
   */
  readonly source: "memfd" | "anonymous" | "guest_memfd" | "file";
  /** The file, for `source: "file"`. */
  readonly path?: string;
  /** MAP_SHARED (true) or MAP_PRIVATE. */
  readonly shared: boolean;
  /** The huge pages asked for. */
  readonly hugePages: HugePages;
  /** The hugetlb page size in bytes (for 2M / 1G). */
  readonly hugePageSize?: number;
  /** hugetlb pages the memory takes (for 2M / 1G). */
  readonly hugePagesNeeded?: number;
  /** Prefault: how, or "none". MAP_POPULATE, or (after THP advice) MADV_POPULATE_WRITE / _READ. */
  readonly prefault: "none" | "MAP_POPULATE" | "MADV_POPULATE_WRITE" | "MADV_POPULATE_READ";
  /** KVM memory slots: KVM_SET_USER_MEMORY_REGION2 with the guest_memfd, or KVM_SET_USER_MEMORY_REGION. */
  readonly slots: "KVM_SET_USER_MEMORY_REGION" | "KVM_SET_USER_MEMORY_REGION2";
  /** One line for logs and reports: `memfd, 4 KiB pages`, `guest_memfd (MMAP | INIT_SHARED) …`. */
  readonly summary: string;
}

/** The planner's answer. */
export type MemoryPlanResult = { readonly ok: true; readonly plan: MemoryPlan } | { readonly ok: false; readonly refusal: string };

/** `2 MiB`, `1 GiB`. */
export function pageSizeName(bytes: number): string {
  return bytes >= 1 << 30 ? `${bytes / (1 << 30)} GiB` : bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / 1024} KiB`;
}

const HUGE_BYTES = { "2M": 2 * MiB, "1G": 1 << 30 } as const;
const backendName = (b: MemoryBackend): string => (b.kind === "file" ? `file:${b.path}` : b.kind);

/**
 * The checks that do not depend on the host: combinations that cannot exist
 * and sizes that are not a whole number of huge pages. Returns the sentence,
 * or undefined when the request is coherent (the VMM makes these checks
 * before it reads the kernel or opens KVM).
 */
export function memoryRequestProblem(memMiB: number, options: GuestMemoryOptions): string | undefined {
  const backend = options.backend ?? { kind: "memfd" };
  const huge = options.hugePages ?? "none";
  if (backend.kind === "guest_memfd") {
    if (huge !== "none") return `hugepages=${huge} cannot be combined with backend=guest_memfd: KVM's guest_memfd has no huge page option in this API (use backend=memfd)`;
    if (options.shared === false) return "backend=guest_memfd is always shared (KVM maps it MAP_SHARED), so shared=off cannot be combined with it";
  }
  if (backend.kind === "file" && huge !== "none") return `hugepages=${huge} cannot be combined with backend=file (put the file on a hugetlbfs mount instead)`;
  if (huge === "2M" || huge === "1G") {
    const pageSize = HUGE_BYTES[huge];
    if ((memMiB * MiB) % pageSize !== 0) return `hugepages=${huge} needs a memory size that is a multiple of ${pageSizeName(pageSize)}, got ${memMiB} MiB`;
  }
  return undefined;
}

/**
 * Decides how to build `memMiB` MiB of guest RAM with `options` on a host
 * with `facts`, or refuses with one sentence (the checks of
 * {@link memoryRequestProblem} first).
 */
export function planGuestMemory(memMiB: number, options: GuestMemoryOptions, facts: MemoryHostFacts): MemoryPlanResult {
  const refuse = (refusal: string): MemoryPlanResult => ({ ok: false, refusal });
  const problem = memoryRequestProblem(memMiB, options);
  if (problem !== undefined) return refuse(problem);
  const backend = options.backend ?? { kind: "memfd" };
  const huge = options.hugePages ?? "none";
  const prefault = options.prefault === true;
  const bytes = memMiB * MiB;
  const bname = backendName(backend);

  if (backend.kind === "guest_memfd") {
    if (!facts.guestMemfd) return refuse("backend=guest_memfd needs KVM_CAP_GUEST_MEMFD (KVM_CREATE_GUEST_MEMFD, Linux 6.8 or later), which this host's KVM does not offer");
    if (!facts.userMemory2) return refuse("backend=guest_memfd needs KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2), which this host's KVM does not offer");
    const need = GMEM_MMAP | GMEM_INIT_SHARED;
    if ((facts.guestMemfdFlags & need) !== need) {
      const missing = guestMemfdFlagNames(need & ~facts.guestMemfdFlags).map((n) => `GUEST_MEMFD_FLAG_${n}`).join(" and ");
      const has = guestMemfdFlagNames(facts.guestMemfdFlags).join(" | ") || "none";
      return refuse(`backend=guest_memfd needs ${missing} in KVM_CAP_GUEST_MEMFD_FLAGS so the VMM can map guest memory (Linux 6.18 or later), but this host's KVM offers ${has} (0x${facts.guestMemfdFlags.toString(16)})`);
    }
    return {
      ok: true,
      plan: {
        bytes, source: "guest_memfd", shared: true, hugePages: "none", prefault: prefault ? "MAP_POPULATE" : "none",
        slots: "KVM_SET_USER_MEMORY_REGION2",
        summary: `guest_memfd (MMAP | INIT_SHARED) mapped shared, 4 KiB pages${prefault ? ", prefaulted (MAP_POPULATE)" : ""}; slots by KVM_SET_USER_MEMORY_REGION2`,
      },
    };
  }

  if (backend.kind === "file") {
    const shared = options.shared ?? true;
    return {
      ok: true,
      plan: {
        bytes, source: "file", path: backend.path, shared, hugePages: "none", prefault: prefault ? "MAP_POPULATE" : "none",
        slots: "KVM_SET_USER_MEMORY_REGION",
        summary: `${bname} mapped ${shared ? "shared (guest writes reach the file)" : "private (copy-on-write; the file is never changed)"}${prefault ? ", prefaulted (MAP_POPULATE)" : ""}`,
      },
    };
  }

  // memfd (shared) or private anonymous memory.
  if (huge === "2M" || huge === "1G") {
    const pageSize = HUGE_BYTES[huge];
    const shared = options.shared ?? true;
    const pool = facts.hugePagePools.find((p) => p.pageSize === pageSize);
    const sysPath = `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;
    if (pool === undefined) return refuse(`hugepages=${huge} needs a pool of ${pageSizeName(pageSize)} pages, which this kernel does not have (${sysPath} is absent)`);
    const needed = bytes / pageSize;
    const free = availableHugePages(pool);
    if (free < needed) {
      return refuse(
        `hugepages=${huge} needs ${needed} free ${pageSizeName(pageSize)} page${needed === 1 ? "" : "s"} for ${memMiB} MiB of guest memory, but ${free === 1 ? "1 is" : `${free} are`} free ` +
          `(pool of ${pool.total}, ${pool.reserved} reserved); add ${needed - free} with: echo ${pool.total + needed - free} > ${sysPath}/nr_hugepages`,
      );
    }
    return {
      ok: true,
      plan: {
        bytes, source: shared ? "memfd" : "anonymous", shared, hugePages: huge, hugePageSize: pageSize, hugePagesNeeded: needed,
        prefault: prefault ? "MAP_POPULATE" : "none", slots: "KVM_SET_USER_MEMORY_REGION",
        summary: `${shared ? "hugetlb memfd" : "private anonymous hugetlb memory"}, ${needed} pages of ${pageSizeName(pageSize)} (of ${free} free)${prefault ? ", prefaulted (MAP_POPULATE)" : ""}`,
      },
    };
  }
  if (huge === "thp") {
    const shared = options.shared ?? false;
    const mode = shared ? facts.thp.shmemEnabled : facts.thp.enabled;
    const file = `/sys/kernel/mm/transparent_hugepage/${shared ? "shmem_enabled" : "enabled"}`;
    if (mode === null) return refuse("hugepages=thp needs transparent huge pages, which this kernel does not have (/sys/kernel/mm/transparent_hugepage is absent)");
    if (shared && (mode === "never" || mode === "deny")) {
      return refuse(`hugepages=thp with shared=on needs THP for shared memory, but ${file} is ${mode} (leave shared off for private memory, which follows the enabled setting)`);
    }
    if (!shared && mode === "never") return refuse(`hugepages=thp needs transparent huge pages, but ${file} is never`);
    const how = prefault ? (shared ? "MADV_POPULATE_READ" : "MADV_POPULATE_WRITE") : "none";
    return {
      ok: true,
      plan: {
        bytes, source: shared ? "memfd" : "anonymous", shared, hugePages: "thp", prefault: how, slots: "KVM_SET_USER_MEMORY_REGION",
        summary: `${shared ? "memfd" : "private anonymous memory"} with MADV_HUGEPAGE (${file}: ${mode})${prefault ? `, prefaulted after the advice (${how})` : ""}`,
      },
    };
  }
  const shared = options.shared ?? true;
  return {
    ok: true,
    plan: {
      bytes, source: shared ? "memfd" : "anonymous", shared, hugePages: "none", prefault: prefault ? "MAP_POPULATE" : "none",
      slots: "KVM_SET_USER_MEMORY_REGION",
      summary: `${shared ? "memfd" : "private anonymous memory"}, 4 KiB pages${prefault ? ", prefaulted (MAP_POPULATE)" : ""}`,
    },
  };
}
