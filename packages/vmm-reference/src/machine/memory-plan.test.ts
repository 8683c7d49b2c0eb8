// The planner on injected hosts: every refusal is one sentence that names
// what is missing; what this machine answers is checked in test/memory-backends.test.ts.
import { describe, expect, it } from "vitest";
import type { MemoryHostFacts } from "./memory-host.js";
import { availableHugePages, guestMemfdFlagNames } from "./memory-host.js";
import { planGuestMemory, type MemoryPlanResult } from "./memory-plan.js";
import { formatMemoryCapabilityReport, memoryCapabilityReport } from "./memory-report.js";

const MiB = 1 << 20;
const pool = (pageSize: number, total: number, free = total, reserved = 0) => ({ pageSize, total, free, reserved, surplus: 0, overcommit: 0 });

/** A host with everything: Linux 6.18 KVM, 64 free 2 MiB pages, 2 free 1 GiB pages, THP madvise for anon and shmem. */
const FULL: MemoryHostFacts = {
  userMemory2: true, guestMemfd: true, guestMemfdFlags: 3, preFaultMemory: true,
  hugePagePools: [pool(2 * MiB, 64), pool(1 << 30, 2)],
  thp: { enabled: "madvise", shmemEnabled: "advise", defrag: "madvise" },
};
const host = (over: Partial<MemoryHostFacts>): MemoryHostFacts => ({ ...FULL, ...over });

function refusal(r: MemoryPlanResult): string {
  if (r.ok) throw new Error(`expected a refusal, got a plan: ${r.plan.summary}`);
  expect(r.refusal.split("\n")).toHaveLength(1);
  expect(r.refusal.endsWith(".")).toBe(false); // one clause-level sentence; the CLI adds nothing after it
  return r.refusal;
}
function plan(r: MemoryPlanResult) {
  if (!r.ok) throw new Error(`refused: ${r.refusal}`);
  return r.plan;
}

describe("planGuestMemory", () => {
  it("default: a memfd of 4 KiB pages, slots by KVM_SET_USER_MEMORY_REGION", () => {
    expect(plan(planGuestMemory(64, {}, FULL))).toMatchObject({ bytes: 64 * MiB, source: "memfd", shared: true, hugePages: "none", prefault: "none", slots: "KVM_SET_USER_MEMORY_REGION" });
    expect(plan(planGuestMemory(64, { shared: false }, FULL))).toMatchObject({ source: "anonymous", shared: false });
    expect(plan(planGuestMemory(64, { prefault: true }, FULL)).prefault).toBe("MAP_POPULATE");
  });

  it("guest_memfd: KVM_SET_USER_MEMORY_REGION2, always shared", () => {
    expect(plan(planGuestMemory(64, { backend: { kind: "guest_memfd" }, prefault: true }, FULL))).toMatchObject({ source: "guest_memfd", shared: true, slots: "KVM_SET_USER_MEMORY_REGION2", prefault: "MAP_POPULATE" });
  });

  it.each([
    [{ guestMemfd: false }, "backend=guest_memfd needs KVM_CAP_GUEST_MEMFD (KVM_CREATE_GUEST_MEMFD, Linux 6.8 or later), which this host's KVM does not offer"],
    [{ userMemory2: false }, "backend=guest_memfd needs KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2), which this host's KVM does not offer"],
    [{ guestMemfdFlags: 0 }, "backend=guest_memfd needs GUEST_MEMFD_FLAG_MMAP and GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS so the VMM can map guest memory (Linux 6.18 or later), but this host's KVM offers none (0x0)"],
    [{ guestMemfdFlags: 1 }, "backend=guest_memfd needs GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS so the VMM can map guest memory (Linux 6.18 or later), but this host's KVM offers MMAP (0x1)"],
  ] as const)("guest_memfd on a host with %j: refused, naming the capability", (over, msg) => {
    expect(refusal(planGuestMemory(64, { backend: { kind: "guest_memfd" } }, host(over)))).toBe(msg);
  });

  it("guest_memfd refuses what it cannot be", () => {
    expect(refusal(planGuestMemory(64, { backend: { kind: "guest_memfd" }, shared: false }, FULL))).toBe("backend=guest_memfd is always shared (KVM maps it MAP_SHARED), so shared=off cannot be combined with it");
    expect(refusal(planGuestMemory(64, { backend: { kind: "guest_memfd" }, hugePages: "2M" }, FULL))).toContain("hugepages=2M cannot be combined with backend=guest_memfd");
  });

  it("hugetlb: the pool is checked before mapping, and the sentence says how many pages are needed and free", () => {
    expect(plan(planGuestMemory(64, { hugePages: "2M" }, FULL))).toMatchObject({ source: "memfd", hugePageSize: 2 * MiB, hugePagesNeeded: 32 });
    expect(plan(planGuestMemory(2048, { hugePages: "1G", shared: false }, FULL))).toMatchObject({ source: "anonymous", hugePageSize: 1 << 30, hugePagesNeeded: 2 });
    expect(refusal(planGuestMemory(256, { hugePages: "2M" }, host({ hugePagePools: [pool(2 * MiB, 100, 90, 10)] })))).toBe(
      "hugepages=2M needs 128 free 2 MiB pages for 256 MiB of guest memory, but 80 are free (pool of 100, 10 reserved); add 48 with: echo 148 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
    );
    expect(refusal(planGuestMemory(1024, { hugePages: "1G" }, host({ hugePagePools: [pool(1 << 30, 0)] })))).toBe(
      "hugepages=1G needs 1 free 1 GiB page for 1024 MiB of guest memory, but 0 are free (pool of 0, 0 reserved); add 1 with: echo 1 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
    );
    expect(refusal(planGuestMemory(1024, { hugePages: "1G" }, host({ hugePagePools: [pool(2 * MiB, 64)] })))).toBe(
      "hugepages=1G needs a pool of 1 GiB pages, which this kernel does not have (/sys/kernel/mm/hugepages/hugepages-1048576kB is absent)",
    );
    expect(refusal(planGuestMemory(65, { hugePages: "2M" }, FULL))).toBe("hugepages=2M needs a memory size that is a multiple of 2 MiB, got 65 MiB");
    expect(refusal(planGuestMemory(1536, { hugePages: "1G" }, FULL))).toBe("hugepages=1G needs a memory size that is a multiple of 1 GiB, got 1536 MiB");
  });

  it("hugetlb counts overcommit headroom as available", () => {
    const p = { ...pool(2 * MiB, 0), overcommit: 40, surplus: 4 };
    expect(availableHugePages(p)).toBe(36);
    expect(plan(planGuestMemory(64, { hugePages: "2M" }, host({ hugePagePools: [p] }))).hugePagesNeeded).toBe(32);
  });

  it("thp: private anonymous memory by default, advised then populated", () => {
    expect(plan(planGuestMemory(64, { hugePages: "thp", prefault: true }, FULL))).toMatchObject({ source: "anonymous", shared: false, prefault: "MADV_POPULATE_WRITE" });
    expect(plan(planGuestMemory(64, { hugePages: "thp", shared: true, prefault: true }, FULL))).toMatchObject({ source: "memfd", shared: true, prefault: "MADV_POPULATE_READ" });
    expect(refusal(planGuestMemory(64, { hugePages: "thp", shared: true }, host({ thp: { enabled: "madvise", shmemEnabled: "never", defrag: "madvise" } })))).toBe(
      "hugepages=thp with shared=on needs THP for shared memory, but /sys/kernel/mm/transparent_hugepage/shmem_enabled is never (leave shared off for private memory, which follows the enabled setting)",
    );
    expect(refusal(planGuestMemory(64, { hugePages: "thp" }, host({ thp: { enabled: "never", shmemEnabled: "never", defrag: "never" } })))).toBe(
      "hugepages=thp needs transparent huge pages, but /sys/kernel/mm/transparent_hugepage/enabled is never",
    );
    expect(refusal(planGuestMemory(64, { hugePages: "thp" }, host({ thp: { enabled: null, shmemEnabled: null, defrag: null } })))).toContain("which this kernel does not have");
  });

  it("file: shared or private; no huge pages", () => {
    expect(plan(planGuestMemory(64, { backend: { kind: "file", path: "/m" } }, FULL))).toMatchObject({ source: "file", path: "/m", shared: true });
    expect(plan(planGuestMemory(64, { backend: { kind: "file", path: "/m" }, shared: false }, FULL))).toMatchObject({ source: "file", shared: false });
    expect(refusal(planGuestMemory(64, { backend: { kind: "file", path: "/m" }, hugePages: "2M" }, FULL))).toBe("hugepages=2M cannot be combined with backend=file (put the file on a hugetlbfs mount instead)");
  });
});

describe("the capability report", () => {
  it("lists every capability, pool and backend, from the same planner", () => {
    const noGmem = host({ guestMemfdFlags: 0, preFaultMemory: false, hugePagePools: [pool(2 * MiB, 4)] });
    const r = memoryCapabilityReport(noGmem, "6.12.0", 64);
    expect(r.kvm.guestMemfdFlags).toEqual({ value: 0, names: [] });
    expect(r.hugePagePools).toEqual([{ ...pool(2 * MiB, 4), available: 4 }]);
    const byOpt = Object.fromEntries(r.backends.map((b) => [b.options, b]));
    expect(byOpt["backend=guest_memfd"]!.available).toBe(false);
    expect(byOpt["backend=guest_memfd"]!.detail).toContain("GUEST_MEMFD_FLAG_MMAP");
    expect(byOpt["hugepages=2M"]!.detail).toContain("needs 32 free 2 MiB pages");
    expect(byOpt["hugepages=1G"]!.detail).toContain("does not have");
    expect(byOpt["backend=memfd"]!.available).toBe(true);
    const text = formatMemoryCapabilityReport(r);
    expect(text).toContain("KVM_CAP_GUEST_MEMFD_FLAGS                           0x0\n");
    expect(text).toContain("KVM_PRE_FAULT_MEMORY is not offered");
    expect(guestMemfdFlagNames(0x7)).toEqual(["MMAP", "INIT_SHARED", "0x4"]);
  });
});
