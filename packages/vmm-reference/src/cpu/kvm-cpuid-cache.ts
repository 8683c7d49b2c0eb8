// Per-process answers of this host's KVM about CPUID that do not change while
// the process lives: KVM_GET_SUPPORTED_CPUID (~0.45 ms an ioctl here) and the
// read-back a restore compares a snapshot's CPUID with (KVM_GET_CPUID2 after
// KVM_SET_CPUID2 of the supported table on a fresh vCPU, ~0.2 ms). Both depend
// only on the kvm module loaded and its parameters; a module reloaded under a
// running process is not noticed (restart the process). Callers get copies, so
// nothing they do changes the cached tables.
import type { CpuidEntry, Kvm } from "@ts-vmm/kvm-ioctls";

let supported: readonly CpuidEntry[] | undefined;
let readBack: readonly CpuidEntry[] | undefined;

const copy = (t: readonly CpuidEntry[]): CpuidEntry[] => t.map((e) => ({ ...e }));

/** KVM_GET_SUPPORTED_CPUID, asked once per process. */
export function supportedCpuid(kvm: Pick<Kvm, "getSupportedCpuid">): CpuidEntry[] {
  supported ??= copy(kvm.getSupportedCpuid());
  return copy(supported);
}

/**
 * What a vCPU set to `supportedTable` reads back (see cpuMismatch), computed
 * with `probe` the first time in this process and kept. `probe` must set
 * `supportedTable` on a vCPU that has not run and return its KVM_GET_CPUID2.
 */
export function cpuidReadBack(probe: () => readonly CpuidEntry[]): CpuidEntry[] {
  readBack ??= copy(probe());
  return copy(readBack);
}
