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

/**
 * The stats files of one VM; each read gives a {@link KvmMetrics}. The files are opened
 * on the first read (about 0.25 ms for a VM and a vCPU here, kept off the create and
 * restore path), and read a last time at close.
 */
export class KvmStatsSource {
  readonly #vmFd: VmFd;
  readonly #vcpuFds: readonly VcpuFd[];
  #vm: KvmStats | undefined;
  #vcpus: KvmStats[] = [];
  #reason: string | undefined;
  #opened = false;
  #closed = false;
  #last: KvmMetrics = { available: false, vm: {}, vcpus: [] };

  /** Remembers the fds; nothing is opened yet. */
  constructor(vm: VmFd, vcpus: readonly VcpuFd[]) {
    this.#vmFd = vm;
    this.#vcpuFds = vcpus;
  }

  /** Opens the VM's and every vCPU's stats file if the host has KVM_CAP_BINARY_STATS_FD; never throws. */
  #open(): void {
    this.#opened = true;
    try {
      if (this.#vmFd.checkExtension(Cap.BINARY_STATS_FD) <= 0) {
        this.#reason = "the host's KVM lacks KVM_CAP_BINARY_STATS_FD (Linux < 5.14)";
        return;
      }
      this.#vm = this.#vmFd.statsFd();
      for (const v of this.#vcpuFds) this.#vcpus.push(v.statsFd());
    } catch (e) {
      this.#reason = `KVM_GET_STATS_FD failed: ${(e as Error).message}`;
      this.#vm?.close();
      for (const s of this.#vcpus) s.close();
      this.#vm = undefined;
      this.#vcpus = [];
    }
  }

  /**
   * Reads every stats file now (one pread each); once closed, or if a read fails, the
   * last values read (with the failure as `reason`).
   */
  read(): KvmMetrics {
    if (!this.#opened && !this.#closed) this.#open();
    const vm = this.#vm;
    if (vm === undefined) return { ...this.#last, ...(this.#reason !== undefined ? { reason: this.#reason } : {}) };
    if (vm.closed) return this.#last;
    try {
      this.#last = { available: true, vm: asNumbers(vm.read()), vcpus: this.#vcpus.map((s) => asNumbers(s.read())) };
    } catch (e) {
      return { ...this.#last, available: false, reason: `reading KVM stats failed: ${(e as Error).message}` };
    }
    return this.#last;
  }

  /** Reads a last time (kept for later read() calls; opens the files first if no read did), then closes them. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.read();
    this.#closed = true;
    this.#vm?.close();
    for (const s of this.#vcpus) s.close();
  }
}
