// `ts-vmm host-info`: the memory capabilities of this host and which guest
// memory backends it can serve, from the same facts and planner `run` uses.
import { guestMemfdFlagNames, availableHugePages, type MemoryHostFacts } from "./memory-host.js";
import { pageSizeName, planGuestMemory } from "./memory-plan.js";
import type { GuestMemoryOptions } from "./memory-config.js";

/** Whether one backend works here, and why not. */
export interface BackendAvailability {
  /** The `--memory` options that select it, e.g. `backend=guest_memfd` or `hugepages=2M`. */
  readonly options: string;
  /** The planner accepts it for a guest of `probeMiB` MiB. */
  readonly available: boolean;
  /** The plan's summary, or the refusal sentence. */
  readonly detail: string;
}

/** The memory capability report (`ts-vmm host-info --json`). */
export interface MemoryCapabilityReport {
  /** The host kernel release. */
  readonly kernel: string;
  /** KVM's memory capabilities. */
  readonly kvm: {
    /** KVM_CAP_USER_MEMORY2. */
    readonly userMemory2: boolean;
    /** KVM_CAP_GUEST_MEMFD. */
    readonly guestMemfd: boolean;
    /** KVM_CAP_GUEST_MEMFD_FLAGS: the value and the flag names. */
    readonly guestMemfdFlags: { readonly value: number; readonly names: readonly string[] };
    /** KVM_CAP_PRE_FAULT_MEMORY. */
    readonly preFaultMemory: boolean;
  };
  /** The hugetlb pools, with the pages a new mapping can count on (`available`). */
  readonly hugePagePools: readonly {
    readonly pageSize: number;
    readonly total: number;
    readonly free: number;
    readonly reserved: number;
    readonly surplus: number;
    readonly overcommit: number;
    readonly available: number;
  }[];
  /** THP modes. */
  readonly thp: MemoryHostFacts["thp"];
  /** How guest memory would be prefaulted here. */
  readonly prefault: string;
  /** Each backend, checked for a guest of `probeMiB` MiB (rounded up to a whole huge page for hugepages=2M / 1G). */
  readonly backends: readonly BackendAvailability[];
  /** The guest size the backends were checked for. */
  readonly probeMiB: number;
}

const PROBES: readonly (readonly [string, GuestMemoryOptions])[] = [
  ["backend=memfd", {}],
  ["backend=memfd,shared=off", { shared: false }],
  ["backend=guest_memfd", { backend: { kind: "guest_memfd" } }],
  ["backend=file:PATH", { backend: { kind: "file", path: "/PATH" } }],
  ["hugepages=2M", { hugePages: "2M" }],
  ["hugepages=1G", { hugePages: "1G" }],
  ["hugepages=thp", { hugePages: "thp" }],
  ["hugepages=thp,shared=on", { hugePages: "thp", shared: true }],
];

/** Builds the report from the host's facts; backends are checked for a guest of `probeMiB` MiB (default 1024). */
export function memoryCapabilityReport(facts: MemoryHostFacts, kernel: string, probeMiB = 1024): MemoryCapabilityReport {
  return {
    kernel,
    kvm: {
      userMemory2: facts.userMemory2,
      guestMemfd: facts.guestMemfd,
      guestMemfdFlags: { value: facts.guestMemfdFlags, names: guestMemfdFlagNames(facts.guestMemfdFlags) },
      preFaultMemory: facts.preFaultMemory,
    },
    hugePagePools: facts.hugePagePools.map((p) => ({ ...p, available: availableHugePages(p) })),
    thp: facts.thp,
    prefault: `MAP_POPULATE on the VMM's mapping (MADV_POPULATE_* after THP advice); KVM_PRE_FAULT_MEMORY ${facts.preFaultMemory ? "is offered but not used yet" : "is not offered by this KVM"}`,
    backends: PROBES.map(([options, o]) => {
      // A whole number of huge pages: 1G is checked for at least one page.
      const mib = o.hugePages === "1G" ? Math.ceil(probeMiB / 1024) * 1024 : o.hugePages === "2M" ? Math.ceil(probeMiB / 2) * 2 : probeMiB;
      const r = planGuestMemory(mib, o, facts);
      return { options, available: r.ok, detail: r.ok ? r.plan.summary : r.refusal };
    }),
    probeMiB,
  };
}

const yes = (b: boolean): string => (b ? "yes" : "no");

/** The report as text, one fact per line. */
export function formatMemoryCapabilityReport(r: MemoryCapabilityReport): string {
  const lines = [
    `Memory capabilities (Linux ${r.kernel})`,
    "",
    "KVM:",
    `  KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2)  ${yes(r.kvm.userMemory2)}`,
    `  KVM_CAP_GUEST_MEMFD                                 ${yes(r.kvm.guestMemfd)}`,
    `  KVM_CAP_GUEST_MEMFD_FLAGS                           0x${r.kvm.guestMemfdFlags.value.toString(16)}${r.kvm.guestMemfdFlags.names.length ? ` (${r.kvm.guestMemfdFlags.names.join(" | ")})` : ""}`,
    `  KVM_CAP_PRE_FAULT_MEMORY                            ${yes(r.kvm.preFaultMemory)}`,
    "",
    "Huge page pools (/sys/kernel/mm/hugepages):",
    ...(r.hugePagePools.length === 0
      ? ["  none (no hugetlbfs)"]
      : r.hugePagePools.map((p) => `  ${pageSizeName(p.pageSize).padEnd(7)} total ${p.total}, free ${p.free}, reserved ${p.reserved}, surplus ${p.surplus} (overcommit ${p.overcommit}): ${p.available} available`)),
    "",
    `Transparent huge pages: enabled ${r.thp.enabled ?? "absent"}, shmem_enabled ${r.thp.shmemEnabled ?? "absent"}, defrag ${r.thp.defrag ?? "absent"}`,
    `Prefault: ${r.prefault}`,
    "",
    `Guest memory backends (checked for a ${r.probeMiB} MiB guest):`,
    ...r.backends.map((b) => `  ${b.options.padEnd(26)} ${b.available ? "yes" : "no "}  ${b.detail}`),
  ];
  return lines.join("\n") + "\n";
}
