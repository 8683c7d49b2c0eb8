import { KvmError, check, checkUint } from "./errors.js";
import { FdHandle } from "./fd.js";
import { Cap, KVM_API_VERSION } from "./generated/kvm-constants.js";
import {
  type CpuidEntry,
  type MsrEntry,
  cpuid2Buffer,
  decodeCpuid2,
  decodeMsrList,
  decodeMsrs,
  encodeMsrs,
  msrListBuffer,
} from "./layouts/cpuid-msr.js";
import { native } from "./native.js";
import { VmFd } from "./vm.js";

/** XSAVE feature number of AMX tile data (XFEATURE_XTILE_DATA). */
const XFEATURE_XTILE_DATA = 18;

/** Most CPUID entries KVM accepts in one table (KVM_MAX_CPUID_ENTRIES in the kernel). */
export const MAX_CPUID_ENTRIES = 256;
/** Most MSRs KVM reads or writes in one KVM_GET/SET_MSRS (MAX_IO_MSRS in the kernel). */
export const MAX_IO_MSRS = 256;

/** Options of {@link Kvm.createVm}. */
export interface CreateVmOptions {
  /** VM type: KVM_X86_DEFAULT_VM (0) or KVM_X86_SW_PROTECTED_VM (1), ... */
  readonly type?: number;
}

/**
 * The KVM system fd (/dev/kvm): capability queries, supported CPUID and MSR
 * lists, and VM creation. Mirrors rust-vmm `kvm_ioctls::Kvm`.
 */
export class Kvm {
  readonly #h: FdHandle;
  #mmapSize: number | undefined;

  /**
   * Opens /dev/kvm (or `path`) read-write, close-on-exec.
   * @throws {@link KvmError} with the errno of open(2) (`ENOENT`, `EACCES`), or `EINVAL` if the API version is not 12.
   */
  constructor(path = "/dev/kvm") {
    check(typeof path === "string", "path must be a string");
    const fd = native().open(path);
    if (fd < 0) throw KvmError.fromErrno("open", -fd);
    this.#h = new FdHandle(fd, true, "Kvm");
    const v = this.apiVersion();
    if (v !== KVM_API_VERSION) {
      this.close();
      throw new KvmError("Unsupported", `KVM API version ${v}, expected ${KVM_API_VERSION}`);
    }
  }

  /** The raw fd. @throws {@link KvmError} `Closed` */
  get fd(): number {
    return this.#h.fd;
  }

  /** KVM_GET_API_VERSION (12). @throws {@link KvmError} */
  apiVersion(): number {
    return this.#h.val("KVM_GET_API_VERSION");
  }

  /**
   * KVM_CHECK_EXTENSION: 0 if `cap` is unsupported, else a positive
   * capability-specific value (for example a count or a size).
   * @throws {@link KvmError} `InvalidArgument` for a negative or non-integer cap.
   */
  checkExtension(cap: number): number {
    checkUint(cap, "cap");
    return this.#h.val("KVM_CHECK_EXTENSION", cap);
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes to map from a vCPU fd (kvm_run and more). @throws {@link KvmError} */
  getVcpuMmapSize(): number {
    this.#mmapSize ??= this.#h.val("KVM_GET_VCPU_MMAP_SIZE");
    return this.#mmapSize;
  }

  #cpuid(name: "KVM_GET_SUPPORTED_CPUID" | "KVM_GET_EMULATED_CPUID", maxEntries: number): CpuidEntry[] {
    checkUint(maxEntries, "maxEntries", MAX_CPUID_ENTRIES + 1);
    check(maxEntries > 0, "maxEntries must be positive");
    const buf = cpuid2Buffer(maxEntries);
    this.#h.buf(name, buf);
    return decodeCpuid2(buf);
  }

  /**
   * KVM_GET_SUPPORTED_CPUID: the CPUID bits KVM can expose.
   * @param maxEntries room to allocate, at most 256.
   * @throws {@link KvmError} `E2BIG` if the table has more entries than maxEntries; `TooLarge`/`OutOfRange` for maxEntries.
   */
  getSupportedCpuid(maxEntries = MAX_CPUID_ENTRIES): CpuidEntry[] {
    return this.#cpuid("KVM_GET_SUPPORTED_CPUID", maxEntries);
  }

  /** KVM_GET_EMULATED_CPUID: CPUID bits KVM emulates. @throws {@link KvmError} as getSupportedCpuid. */
  getEmulatedCpuid(maxEntries = MAX_CPUID_ENTRIES): CpuidEntry[] {
    return this.#cpuid("KVM_GET_EMULATED_CPUID", maxEntries);
  }

  #msrList(name: "KVM_GET_MSR_INDEX_LIST" | "KVM_GET_MSR_FEATURE_INDEX_LIST"): number[] {
    // First ask with nmsrs = 0: the kernel answers E2BIG and writes the count.
    const probe = msrListBuffer(0);
    const r = this.#h.bufTry(name, probe);
    if (r < 0 && -r !== 7 /* E2BIG */) throw KvmError.fromErrno(name, -r);
    const n = new DataView(probe.buffer).getUint32(0, true);
    if (n === 0) return [];
    check(n <= 65536, `${name} reported ${n} MSRs`, "TooLarge");
    const buf = msrListBuffer(n);
    this.#h.buf(name, buf);
    return decodeMsrList(buf);
  }

  /** KVM_GET_MSR_INDEX_LIST: MSRs that KVM saves and restores. @throws {@link KvmError} */
  getMsrIndexList(): number[] {
    return this.#msrList("KVM_GET_MSR_INDEX_LIST");
  }

  /** KVM_GET_MSR_FEATURE_INDEX_LIST: feature MSRs readable with {@link Kvm.getMsrs}. @throws {@link KvmError} */
  getMsrFeatureIndexList(): number[] {
    return this.#msrList("KVM_GET_MSR_FEATURE_INDEX_LIST");
  }

  /**
   * KVM_GET_MSRS on the system fd: values of feature MSRs.
   * @returns the entries KVM read (a prefix of `indices`).
   * @throws {@link KvmError} `TooLarge` for more than 256 indices.
   */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    check(Array.isArray(indices), "indices must be an array");
    check(indices.length <= MAX_IO_MSRS, `at most ${MAX_IO_MSRS} MSRs per call`, "TooLarge");
    const buf = encodeMsrs(indices.map((i) => ({ index: checkUint(i, "MSR index"), data: 0n })));
    const n = this.#h.buf("KVM_GET_MSRS", buf);
    return decodeMsrs(buf, n);
  }

  /**
   * KVM_CREATE_VM.
   * @throws {@link KvmError} `EINVAL` for an unsupported type, or `InvalidArgument`.
   */
  createVm(opts: CreateVmOptions = {}): VmFd {
    const type = checkUint(opts.type ?? 0, "type", 256);
    const fd = this.#h.val("KVM_CREATE_VM", type);
    return new VmFd(fd, this.getVcpuMmapSize());
  }

  /** True if this fd was closed. */
  get closed(): boolean {
    return this.#h.closed;
  }

  /**
   * Asks Linux to let this process give guests the AMX tile data state
   * (`arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, XFEATURE_XTILE_DATA)`), which KVM needs
   * before a vCPU's CPUID may expose AMX. Process-wide and permanent; VMs and vCPUs
   * created afterwards report and use the larger XSAVE size (KVM_CAP_XSAVE2, 11008 on
   * Sapphire Rapids), and `getXsave2()`/`setXsave()` buffers follow it.
   * @throws {@link KvmError} from arch_prctl (`EINVAL`/`EOPNOTSUPP` without AMX), `Unsupported` without the addon call.
   */
  static requestAmxGuestPermission(): void {
    const n = native();
    if (typeof n.requestGuestXcompPerm !== "function") throw new KvmError("Unsupported", "the addon has no requestGuestXcompPerm");
    const r = n.requestGuestXcompPerm(XFEATURE_XTILE_DATA);
    if (r < 0) throw KvmError.fromErrno("arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)", -r);
  }

  /** Closes /dev/kvm; VMs created from it stay valid. Idempotent. @throws {@link KvmError} */
  close(): void {
    this.#h.close();
  }

  /** Capability numbers, for convenience (`kvm.checkExtension(Kvm.Cap.IRQFD)`). */
  static readonly Cap = Cap;
}
