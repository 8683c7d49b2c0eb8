// KVM's binary statistics of a VM and its vCPUs (KVM_GET_STATS_FD through
// @ts-vmm/kvm-ioctls), opened once and read on each metrics() call.
import { Cap, type KvmStats, type VcpuFd, type VmFd } from "@ts-vmm/kvm-ioctls";
import type { KvmMetrics } from "./types.js";

/** A stats file's values as JSON numbers. */
function asNumbers(v: Record<string, bigint | bigint[]>): Record<string, number | number[]> {
  const out: Record<string, number | number[]> = {};
  for (const [k, x] of Object.entries(v)) out[k] = typeof x === "bigint" ? Number(x) : x.map(Number);
  return out;
}

/** The stats files of one VM; each read gives a {@link KvmMetrics}. */
export class KvmStatsSource {
  readonly #vm: KvmStats | undefined;
  readonly #vcpus: readonly KvmStats[];
  readonly #reason: string | undefined;
  #last: KvmMetrics;

  /** Opens the VM's and every vCPU's stats file, if the host has KVM_CAP_BINARY_STATS_FD; never throws. */
  constructor(vm: VmFd, vcpus: readonly VcpuFd[]) {
    let reason: string | undefined;
    let vmStats: KvmStats | undefined;
    const vcpuStats: KvmStats[] = [];
    try {
      if (vm.checkExtension(Cap.BINARY_STATS_FD) <= 0) reason = "the host's KVM lacks KVM_CAP_BINARY_STATS_FD (Linux < 5.14)";
      else {
        vmStats = vm.statsFd();
        for (const v of vcpus) vcpuStats.push(v.statsFd());
      }
    } catch (e) {
      reason = `KVM_GET_STATS_FD failed: ${(e as Error).message}`;
      vmStats?.close();
      for (const s of vcpuStats) s.close();
      vmStats = undefined;
      vcpuStats.length = 0;
    }
    this.#vm = vmStats;
    this.#vcpus = vcpuStats;
    this.#reason = reason;
    this.#last = this.#empty();
  }

  #empty(): KvmMetrics {
    return { available: false, ...(this.#reason !== undefined ? { reason: this.#reason } : {}), vm: {}, vcpus: [] };
  }

  /**
   * Reads every stats file now (one pread each); once closed, or if a read fails, the
   * last values read (with the failure as `reason`).
   */
  read(): KvmMetrics {
    const vm = this.#vm;
    if (vm === undefined || vm.closed) return this.#last;
    try {
      this.#last = { available: true, vm: asNumbers(vm.read()), vcpus: this.#vcpus.map((s) => asNumbers(s.read())) };
    } catch (e) {
      return { ...this.#last, available: false, reason: `reading KVM stats failed: ${(e as Error).message}` };
    }
    return this.#last;
  }

  /** Reads a last time (kept for later read() calls), then closes the files. Idempotent. */
  close(): void {
    if (this.#vm === undefined || this.#vm.closed) return;
    this.read();
    this.#vm.close();
    for (const s of this.#vcpus) s.close();
  }
}
