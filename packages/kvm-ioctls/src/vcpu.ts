import { MmapRegion, gettid } from "@ts-vmm/vmm-sys-util";
import { KvmError, check, checkU64, checkUint, fromSysError } from "./errors.js";
import { ExitDecoder, INTR_EXIT, type VcpuExit } from "./exits.js";
import { FdHandle } from "./fd.js";
import { KVM_COALESCED_MMIO_PAGE_OFFSET, KVM_DIRTY_GFN_F_DIRTY, KVM_DIRTY_GFN_F_RESET, KVM_DIRTY_LOG_PAGE_OFFSET, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET } from "./generated/kvm-constants.js";
import { type VcpuTransferable, VcpuKicker, ensureKickSignal, recordRunThread } from "./kick.js";
import { view } from "./layouts/bytes.js";
import {
  type CpuidEntry,
  type MsrEntry,
  cpuid2Buffer,
  decodeCpuid2,
  decodeMsrs,
  decodeRegList,
  encodeCpuid2,
  encodeMsrs,
  regListBuffer,
} from "./layouts/cpuid-msr.js";
import { RUN } from "./layouts/kvm-run.js";
import { type Regs, KVM_REGS_SIZE, decodeRegs, encodeRegs } from "./layouts/regs.js";
import { type Sregs, type Sregs2, KVM_SREGS2_SIZE, KVM_SREGS_SIZE, decodeSregs, decodeSregs2, encodeSregs, encodeSregs2 } from "./layouts/sregs.js";
import {
  type DebugRegs,
  type Fpu,
  type GuestDebug,
  type VcpuEvents,
  type Xcr,
  KVM_DEBUGREGS_SIZE,
  KVM_FPU_SIZE,
  KVM_MAX_XCRS_ENTRIES,
  KVM_VCPU_EVENTS_SIZE,
  KVM_XCRS_SIZE,
  decodeDebugRegs,
  decodeFpu,
  decodeVcpuEvents,
  decodeXcrs,
  encodeDebugRegs,
  encodeFpu,
  encodeGuestDebug,
  encodeVcpuEvents,
  encodeXcrs,
} from "./layouts/vcpu-state.js";
import { DEVICE_ATTR, DIRTY_GFN, LAPIC_STATE, ONE_REG, XSAVE, encodeDeviceAttr, encodeEnableCap } from "./layouts/vm-structs.js";
import type { DeviceAttr } from "./device.js";
import { type NestedStateHeader, NESTED_STATE, decodeNestedStateHeader } from "./layouts/nested-state.js";
import { native } from "./native.js";
import { KvmStats } from "./stats.js";
import { oneRegSize } from "./one-reg.js";

const EINTR = 4;
const E2BIG = 7;
const EFAULT = 14;
const EHWPOISON = 133;
/** KVM_EXIT_MEMORY_FAULT: the one exit reported with KVM_RUN failing (EFAULT / EHWPOISON). */
const EXIT_MEMORY_FAULT = 39;
const PAGE = 4096;
/** Most CPUID entries in one table (KVM_MAX_CPUID_ENTRIES). */
const MAX_CPUID = 256;
/** Most MSRs in one KVM_GET/SET_MSRS: the kernel refuses nmsrs >= MAX_IO_MSRS (256) with E2BIG. */
const MAX_MSRS = 255;

/** Result of {@link VcpuFd.translate} (struct kvm_translation). */
export interface Translation {
  readonly physicalAddress: bigint;
  readonly valid: boolean;
  readonly writeable: boolean;
  /** Always false on x86: KVM does not report it. */
  readonly usermode: boolean;
}

/** One write taken from the coalesced MMIO ring. */
export interface CoalescedWrite {
  readonly address: number;
  readonly len: number;
  readonly pio: boolean;
  readonly data: Uint8Array;
}

/** One harvested dirty-ring entry: page `offset` of memory slot `slot`. */
export interface DirtyGfn {
  readonly slot: number;
  readonly offset: bigint;
}

/**
 * A vCPU fd and its kvm_run page. Mirrors rust-vmm `VcpuFd`.
 *
 * Threads: a VcpuFd can be used in the thread that created it, or moved to a
 * worker with {@link VcpuFd.toTransferable} / {@link VcpuFd.fromTransferable}.
 * The copy in the worker borrows the fd: the creator closes it, after the
 * worker has stopped running it.
 */
export class VcpuFd {
  readonly #h: FdHandle;
  readonly #id: number;
  readonly #region: MmapRegion | undefined;
  readonly #run: SharedArrayBuffer;
  readonly #runU8: Uint8Array;
  readonly #tidBuf: SharedArrayBuffer;
  readonly #tid: Int32Array;
  readonly #kickSignal: number;
  readonly #xsave2Size: number;
  readonly #nestedStateSize: number;
  readonly #dec: ExitDecoder;
  /** The fd while open, -1 after close: read on the hot path instead of the handle's getter. */
  #runFd: number;
  /** The addon's run(), captured once (setNativeBinding applies to VcpuFds created afterwards). */
  readonly #runFn: (fd: number) => number;
  #tidRecorded = false;
  #kicker: VcpuKicker | undefined;
  #ring: MmapRegion | undefined;
  #ringView: DataView | undefined;
  #ringU32: Uint32Array | undefined;
  #ringIndex = 0;

  private constructor(fd: number, owned: boolean, id: number, region: MmapRegion | undefined, run: SharedArrayBuffer, tid: SharedArrayBuffer, kickSignal: number, xsave2Size: number, nestedStateSize: number) {
    this.#h = new FdHandle(fd, owned, "VcpuFd");
    this.#id = id;
    this.#region = region;
    this.#run = run;
    this.#runU8 = new Uint8Array(run, 0, RUN.size);
    this.#tidBuf = tid;
    this.#tid = new Int32Array(tid, 0, 1);
    this.#kickSignal = kickSignal;
    this.#xsave2Size = xsave2Size;
    this.#nestedStateSize = nestedStateSize;
    this.#dec = new ExitDecoder(run);
    this.#runFd = fd;
    this.#runFn = native().run;
  }

  /** @internal Used by {@link VmFd.createVcpu}. */
  static create(fd: number, id: number, mmapSize: number, xsave2Size: number, dirtyRingBytes: number, nestedStateSize = 0): VcpuFd {
    let region: MmapRegion;
    try {
      region = MmapRegion.fromFd(fd, mmapSize, { shared: true });
    } catch (e) {
      native().close(fd);
      throw fromSysError(e, `mmap of vCPU ${id}'s kvm_run`);
    }
    let v: VcpuFd | undefined;
    try {
      v = new VcpuFd(fd, true, id, region, region.buffer, new SharedArrayBuffer(4), ensureKickSignal(), xsave2Size, nestedStateSize);
      if (dirtyRingBytes > 0) v.#mapRing(dirtyRingBytes);
      return v;
    } catch (e) {
      // Neither the fd nor the mapping may outlive a failed create.
      if (v !== undefined) v.close();
      else {
        region.close();
        native().close(fd);
      }
      throw fromSysError(e, `setting up vCPU ${id}`);
    }
  }

  /**
   * A VcpuFd over the same vCPU in this thread (usually a worker), from
   * {@link VcpuFd.toTransferable}. It borrows the fd: its close() does not
   * close the fd.
   * @throws {@link KvmError} `InvalidArgument` for a malformed object.
   */
  static fromTransferable(t: VcpuTransferable): VcpuFd {
    check(t !== null && typeof t === "object", "transferable must be an object");
    check(t.run instanceof SharedArrayBuffer && t.run.byteLength >= RUN.size, "run must be the kvm_run SharedArrayBuffer");
    check(t.tid instanceof SharedArrayBuffer && t.tid.byteLength >= 4, "tid must be a 4-byte SharedArrayBuffer");
    checkUint(t.fd, "fd", 2 ** 31);
    return new VcpuFd(t.fd, false, checkUint(t.id, "id"), undefined, t.run, t.tid, checkUint(t.kickSignal, "kickSignal", 65), checkUint(t.xsave2Size ?? 0, "xsave2Size"), checkUint(t.nestedStateSize ?? 0, "nestedStateSize"));
  }

  /** Plain data to rebuild this vCPU in another thread (see {@link VcpuTransferable}). @throws {@link KvmError} `Closed` */
  toTransferable(): VcpuTransferable {
    return { fd: this.#h.fd, id: this.#id, run: this.#run, tid: this.#tidBuf, kickSignal: this.#kickSignal, xsave2Size: this.#xsave2Size, nestedStateSize: this.#nestedStateSize };
  }

  /** A kicker for this vCPU usable from this thread (for other threads, build one from the transferable). */
  kicker(): VcpuKicker {
    this.#kicker ??= new VcpuKicker(this.toTransferable());
    return this.#kicker;
  }

  /** Kicks this vCPU out of KVM_RUN (see {@link VcpuKicker.kick}). @throws {@link KvmError} `Closed` */
  kick(): void {
    this.kicker().kick();
  }

  /**
   * KVM_GET_STATS_FD (KVM_CAP_BINARY_STATS_FD, Linux 5.14+): KVM's binary statistics of this
   * vCPU (names such as `exits`, `halt_exits`, `io_exits`, `mmio_exits`, `halt_wait_hist`), as a {@link KvmStats} the caller owns and closes.
   * @throws {@link KvmError} `ENOTTY`/`EINVAL` where the kernel lacks it; `InvalidStats` for a
   *   stats file whose layout does not add up.
   */
  statsFd(): KvmStats {
    return new KvmStats(this.#h.val("KVM_GET_STATS_FD"));
  }

  /** The vCPU id. */
  get id(): number {
    return this.#id;
  }

  /** The raw fd. @throws {@link KvmError} `Closed` */
  get fd(): number {
    return this.#h.fd;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#h.closed;
  }

  /**
   * The kvm_run page as bytes (shared). Safety: a view of kernel-shared
   * memory; the layout is struct kvm_run (see RUN in layouts/kvm-run.ts).
   */
  get runBuffer(): SharedArrayBuffer {
    return this.#run;
  }

  /**
   * KVM_RUN until the next exit, decoded. Records the calling thread's tid
   * for kick() on first use. Returns `{ kind: "Intr" }` when a signal or
   * immediate_exit ended the run (and clears immediate_exit).
   * A `MemoryFault` exit is returned although KVM_RUN failed (it is reported with
   * EFAULT or EHWPOISON).
   * @throws {@link KvmError} `Closed`; errno of KVM_RUN (`EFAULT`, `ENOEXEC`, ...) except
   *   EINTR and a memory fault.
   */
  run(): VcpuExit {
    const fd = this.#runFd;
    if (fd < 0) throw new KvmError("Closed", "VcpuFd is closed");
    if (!this.#tidRecorded) {
      Atomics.store(this.#tid, 0, gettid());
      this.#tidRecorded = true;
      recordRunThread();
    }
    const r = this.#runFn(fd);
    if (r !== 0) {
      if (r === -EINTR) {
        Atomics.store(this.#runU8, RUN.immediateExit, 0);
        return INTR_EXIT;
      }
      // KVM_EXIT_MEMORY_FAULT comes with KVM_RUN failing (api.rst: exit_reason is only
      // meaningful for EFAULT / EHWPOISON). The reason is reset after decoding so that a
      // later EFAULT without a new memory fault is not read as a stale one.
      if ((r === -EFAULT || r === -EHWPOISON) && this.#dec.reason() === EXIT_MEMORY_FAULT) {
        const exit = this.#dec.decode();
        this.#dec.clearReason();
        return exit;
      }
      throw KvmError.fromErrno("KVM_RUN", -r);
    }
    return this.#dec.decode();
  }

  /** The raw kvm_run.exit_reason of the last exit. */
  get exitReason(): number {
    return this.#dec.reason();
  }

  /** kvm_run.immediate_exit: when set, the next KVM_RUN returns Intr at once. */
  get immediateExit(): boolean {
    return Atomics.load(this.#runU8, RUN.immediateExit) !== 0;
  }

  /** Sets or clears kvm_run.immediate_exit. */
  setImmediateExit(on: boolean): void {
    Atomics.store(this.#runU8, RUN.immediateExit, on ? 1 : 0);
  }

  /**
   * kvm_run.request_interrupt_window: with no in-kernel irqchip, KVM exits
   * with `IrqWindowOpen` as soon as the guest can take an interrupt.
   */
  setRequestInterruptWindow(on: boolean): void {
    Atomics.store(this.#runU8, RUN.requestInterruptWindow, on ? 1 : 0);
  }

  /** kvm_run.ready_for_interrupt_injection after the last exit. */
  get readyForInterruptInjection(): boolean {
    return this.#runU8[RUN.readyForInterruptInjection] !== 0;
  }

  /** Answers an X86Rdmsr/X86Wrmsr exit: `data` for reads, `error` injects #GP. */
  setMsrExitResult(data: bigint, error = false): void {
    this.#dec.setMsrResult(checkU64(data, "data"), error);
  }

  /** Answers a Hypercall exit with the guest's return value. */
  setHypercallResult(ret: bigint): void {
    this.#dec.setHypercallRet(checkU64(ret, "ret"));
  }

  #get(name: Parameters<FdHandle["buf"]>[0], size: number): Uint8Array {
    const buf = new Uint8Array(size);
    this.#h.buf(name, buf);
    return buf;
  }

  /** KVM_GET_REGS. @throws {@link KvmError} */
  getRegs(): Regs {
    return decodeRegs(this.#get("KVM_GET_REGS", KVM_REGS_SIZE));
  }

  /** KVM_SET_REGS. @throws {@link KvmError} `InvalidArgument` for a missing field. */
  setRegs(r: Regs): void {
    this.#h.buf("KVM_SET_REGS", encodeRegs(checkObj(r)));
  }

  /** KVM_GET_SREGS. @throws {@link KvmError} */
  getSregs(): Sregs {
    return decodeSregs(this.#get("KVM_GET_SREGS", KVM_SREGS_SIZE));
  }

  /** KVM_SET_SREGS. @throws {@link KvmError} */
  setSregs(s: Sregs): void {
    this.#h.buf("KVM_SET_SREGS", encodeSregs(checkObj(s)));
  }

  /** KVM_GET_SREGS2 (KVM_CAP_SREGS2). @throws {@link KvmError} */
  getSregs2(): Sregs2 {
    return decodeSregs2(this.#get("KVM_GET_SREGS2", KVM_SREGS2_SIZE));
  }

  /** KVM_SET_SREGS2. @throws {@link KvmError} */
  setSregs2(s: Sregs2): void {
    this.#h.buf("KVM_SET_SREGS2", encodeSregs2(checkObj(s)));
  }

  /** KVM_GET_FPU. @throws {@link KvmError} */
  getFpu(): Fpu {
    return decodeFpu(this.#get("KVM_GET_FPU", KVM_FPU_SIZE));
  }

  /** KVM_SET_FPU. @throws {@link KvmError} */
  setFpu(f: Fpu): void {
    checkObj(f);
    check(f.fpr instanceof Uint8Array && f.fpr.length >= 128 && f.xmm instanceof Uint8Array && f.xmm.length >= 256, "fpr must be 128 bytes and xmm 256 bytes");
    this.#h.buf("KVM_SET_FPU", encodeFpu(f));
  }

  /** The XSAVE area size the kernel uses: max(4096, KVM_CAP_XSAVE2). */
  get xsaveSize(): number {
    return Math.max(XSAVE.size, this.#xsave2Size);
  }

  /** KVM_GET_XSAVE: the legacy 4096-byte XSAVE area. @throws {@link KvmError} `EINVAL` if the state does not fit. */
  getXsave(): Uint8Array {
    return this.#get("KVM_GET_XSAVE", XSAVE.size);
  }

  /** KVM_GET_XSAVE2: the full XSAVE area of {@link VcpuFd.xsaveSize} bytes. @throws {@link KvmError} `Unsupported` without KVM_CAP_XSAVE2. */
  getXsave2(): Uint8Array {
    check(this.#xsave2Size > 0, "KVM_CAP_XSAVE2 is not supported", "Unsupported");
    const buf = new Uint8Array(this.xsaveSize);
    this.#h.buf("KVM_GET_XSAVE2", buf, buf.byteLength);
    return buf;
  }

  /**
   * KVM_SET_XSAVE. The kernel reads {@link VcpuFd.xsaveSize} bytes, so a
   * shorter buffer is rejected before the call.
   * @throws {@link KvmError} `InvalidArgument`; `EINVAL` from KVM.
   */
  setXsave(area: Uint8Array): void {
    check(area instanceof Uint8Array && area.byteLength === this.xsaveSize, `XSAVE area must be ${this.xsaveSize} bytes`);
    this.#h.buf("KVM_SET_XSAVE", area.slice(), this.xsaveSize);
  }

  /** The largest nested state of this vCPU's VM: KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE), 0 if unsupported. */
  get nestedStateSize(): number {
    return this.#nestedStateSize;
  }

  /**
   * KVM_GET_NESTED_STATE: the nested-virtualization state (the L2 guest's VMCS/VMCB when the
   * vCPU runs one), for snapshots. `blob` is struct kvm_nested_state, `size` bytes: pass it to
   * {@link VcpuFd.setNestedState} unchanged. The buffer handed to the kernel holds
   * {@link VcpuFd.nestedStateSize} bytes, the most KVM reports for the VM.
   * @throws {@link KvmError} `Unsupported` when KVM_CAP_NESTED_STATE is 0 (no nested
   *   virtualization: the kernel would answer EINVAL); `E2BIG` if the state outgrew the
   *   capability; `EINVAL` from KVM.
   */
  getNestedState(): NestedStateHeader & { readonly blob: Uint8Array } {
    const max = this.#nestedStateSize;
    check(max >= NESTED_STATE.header, "KVM_CAP_NESTED_STATE is 0: the kernel has no nested state for this VM", "Unsupported");
    const buf = new Uint8Array(max);
    view(buf).setUint32(NESTED_STATE.size, max, true);
    this.#h.buf("KVM_GET_NESTED_STATE", buf, max);
    const h = decodeNestedStateHeader(buf);
    check(h.size >= NESTED_STATE.header && h.size <= max, `KVM_GET_NESTED_STATE reported size ${h.size}, outside 128..${max}`, "OutOfRange");
    return { ...h, blob: buf.slice(0, h.size) };
  }

  /**
   * KVM_SET_NESTED_STATE from a blob of {@link VcpuFd.getNestedState}. Checked before the call:
   * at least the 128-byte header, a `size` field of at least 128 that the blob holds, and at
   * most {@link VcpuFd.nestedStateSize}. The kernel gets a copy of exactly `size` bytes.
   * @throws {@link KvmError} `Unsupported` (KVM_CAP_NESTED_STATE 0), `InvalidArgument`,
   *   `TooLarge`; `EINVAL` from KVM (flags, format or contents it refuses).
   */
  setNestedState(blob: Uint8Array): void {
    check(this.#nestedStateSize >= NESTED_STATE.header, "KVM_CAP_NESTED_STATE is 0: the kernel has no nested state for this VM", "Unsupported");
    check(blob instanceof Uint8Array && blob.byteLength >= NESTED_STATE.header, `nested state must be a Uint8Array of at least ${NESTED_STATE.header} bytes`);
    const { size } = decodeNestedStateHeader(blob);
    check(size >= NESTED_STATE.header, `nested state size field ${size} is below the ${NESTED_STATE.header}-byte header`);
    check(size <= blob.byteLength, `nested state size field ${size} exceeds the ${blob.byteLength}-byte blob`);
    check(size <= this.#nestedStateSize, `nested state of ${size} bytes exceeds KVM_CAP_NESTED_STATE ${this.#nestedStateSize}`, "TooLarge");
    this.#h.buf("KVM_SET_NESTED_STATE", blob.slice(0, size), size);
  }

  /** KVM_GET_XCRS. @throws {@link KvmError} */
  getXcrs(): Xcr[] {
    return decodeXcrs(this.#get("KVM_GET_XCRS", KVM_XCRS_SIZE));
  }

  /** KVM_SET_XCRS. @throws {@link KvmError} `TooLarge` above 16 entries. */
  setXcrs(xcrs: readonly Xcr[]): void {
    check(Array.isArray(xcrs), "xcrs must be an array");
    check(xcrs.length <= KVM_MAX_XCRS_ENTRIES, "at most 16 XCRs", "TooLarge");
    for (const x of xcrs) { checkUint(x.xcr, "xcr"); checkU64(x.value, "value"); }
    this.#h.buf("KVM_SET_XCRS", encodeXcrs(xcrs));
  }

  /**
   * KVM_GET_MSRS for `indices`.
   * @returns the entries KVM read, a prefix of `indices` (it stops at the first MSR it cannot read).
   * @throws {@link KvmError} `TooLarge` above 255 indices (the kernel refuses 256).
   */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    check(Array.isArray(indices), "indices must be an array");
    check(indices.length <= MAX_MSRS, `at most ${MAX_MSRS} MSRs per call`, "TooLarge");
    const buf = encodeMsrs(indices.map((i) => ({ index: checkUint(i, "MSR index"), data: 0n })));
    return decodeMsrs(buf, this.#h.buf("KVM_GET_MSRS", buf));
  }

  /**
   * KVM_SET_MSRS.
   * @returns how many were written (a prefix; the first unwritable MSR stops it).
   * @throws {@link KvmError} `TooLarge` above 255 entries (the kernel refuses 256).
   */
  setMsrs(entries: readonly MsrEntry[]): number {
    check(Array.isArray(entries), "entries must be an array");
    check(entries.length <= MAX_MSRS, `at most ${MAX_MSRS} MSRs per call`, "TooLarge");
    for (const e of entries) { checkUint(e.index, "MSR index"); checkU64(e.data, "MSR data"); }
    return this.#h.buf("KVM_SET_MSRS", encodeMsrs(entries));
  }

  /** KVM_SET_CPUID2. @throws {@link KvmError} `TooLarge` above 256 entries; `EINVAL`/`E2BIG` from KVM. */
  setCpuid2(entries: readonly CpuidEntry[]): void {
    check(Array.isArray(entries), "entries must be an array");
    check(entries.length <= MAX_CPUID, `at most ${MAX_CPUID} CPUID entries`, "TooLarge");
    for (const e of entries) {
      for (const k of ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const) checkUint(e[k], `cpuid.${k}`);
    }
    this.#h.buf("KVM_SET_CPUID2", encodeCpuid2(entries));
  }

  /** KVM_GET_CPUID2: the table set with setCpuid2. @throws {@link KvmError} `E2BIG` if maxEntries is too small. */
  getCpuid2(maxEntries = MAX_CPUID): CpuidEntry[] {
    checkUint(maxEntries, "maxEntries", MAX_CPUID + 1);
    const buf = cpuid2Buffer(maxEntries);
    this.#h.buf("KVM_GET_CPUID2", buf);
    return decodeCpuid2(buf);
  }

  /** KVM_GET_LAPIC: the 1024-byte local APIC register page. @throws {@link KvmError} `ENXIO` without irqchip. */
  getLapic(): Uint8Array {
    return this.#get("KVM_GET_LAPIC", LAPIC_STATE.size);
  }

  /** KVM_SET_LAPIC from 1024 bytes. @throws {@link KvmError} */
  setLapic(regs: Uint8Array): void {
    check(regs instanceof Uint8Array && regs.byteLength === LAPIC_STATE.size, "LAPIC state must be 1024 bytes");
    this.#h.buf("KVM_SET_LAPIC", regs.slice());
  }

  /** KVM_GET_VCPU_EVENTS. @throws {@link KvmError} */
  getVcpuEvents(): VcpuEvents {
    return decodeVcpuEvents(this.#get("KVM_GET_VCPU_EVENTS", KVM_VCPU_EVENTS_SIZE));
  }

  /** KVM_SET_VCPU_EVENTS. @throws {@link KvmError} */
  setVcpuEvents(e: VcpuEvents): void {
    this.#h.buf("KVM_SET_VCPU_EVENTS", encodeVcpuEvents(checkObj(e)));
  }

  /** KVM_GET_MP_STATE (KVM_MP_STATE_*). @throws {@link KvmError} */
  getMpState(): number {
    return view(this.#get("KVM_GET_MP_STATE", 4)).getUint32(0, true);
  }

  /** KVM_SET_MP_STATE. @throws {@link KvmError} `EINVAL` for a state KVM rejects. */
  setMpState(state: number): void {
    const buf = new Uint8Array(4);
    view(buf).setUint32(0, checkUint(state, "state"), true);
    this.#h.buf("KVM_SET_MP_STATE", buf);
  }

  /** KVM_GET_DEBUGREGS. @throws {@link KvmError} */
  getDebugRegs(): DebugRegs {
    return decodeDebugRegs(this.#get("KVM_GET_DEBUGREGS", KVM_DEBUGREGS_SIZE));
  }

  /** KVM_SET_DEBUGREGS. @throws {@link KvmError} `EINVAL` (flags must be 0, reserved DR6/DR7 bits). */
  setDebugRegs(d: DebugRegs): void {
    this.#h.buf("KVM_SET_DEBUGREGS", encodeDebugRegs(checkObj(d)));
  }

  /** KVM_SET_GUEST_DEBUG: single-step and breakpoints; exits as `Debug`. @throws {@link KvmError} */
  setGuestDebug(g: GuestDebug): void {
    checkObj(g);
    checkUint(g.control, "control");
    this.#h.buf("KVM_SET_GUEST_DEBUG", encodeGuestDebug(g));
  }

  /**
   * KVM_GET_ONE_REG: the register's bytes (size from the id).
   * @throws {@link KvmError} `EINVAL`/`ENOENT` for an unknown id.
   */
  getOneReg(id: bigint): Uint8Array {
    const rid = checkU64(id, "id");
    const data = new Uint8Array(oneRegSize(rid));
    const buf = new Uint8Array(ONE_REG.size);
    view(buf).setBigUint64(ONE_REG.id, rid, true);
    this.#h.ptr("KVM_GET_ONE_REG", buf, ONE_REG.addr, data, data.byteLength);
    return data;
  }

  /** KVM_GET_ONE_REG of a register of up to 8 bytes, as a bigint. @throws {@link KvmError} `InvalidArgument` for larger registers. */
  getOneRegU64(id: bigint): bigint {
    const d = this.getOneReg(id);
    check(d.byteLength <= 8, "register is wider than 64 bits; use getOneReg");
    const b = new Uint8Array(8);
    b.set(d);
    return view(b).getBigUint64(0, true);
  }

  /**
   * KVM_SET_ONE_REG from a bigint (registers of up to 8 bytes) or bytes of
   * exactly the register's size.
   * @throws {@link KvmError} `InvalidArgument` for a size mismatch; `EINVAL` from KVM.
   */
  setOneReg(id: bigint, value: bigint | Uint8Array): void {
    const rid = checkU64(id, "id");
    const size = oneRegSize(rid);
    let data: Uint8Array;
    if (typeof value === "bigint") {
      check(size <= 8, "register is wider than 64 bits; pass bytes");
      check(value >= 0n && value < 1n << BigInt(8 * size), `value does not fit in ${size} bytes`, "OutOfRange");
      const b = new Uint8Array(8);
      view(b).setBigUint64(0, value, true);
      data = b.slice(0, size);
    } else {
      check(value instanceof Uint8Array && value.byteLength === size, `value must be ${size} bytes`);
      data = value.slice();
    }
    const buf = new Uint8Array(ONE_REG.size);
    view(buf).setBigUint64(ONE_REG.id, rid, true);
    this.#h.ptr("KVM_SET_ONE_REG", buf, ONE_REG.addr, data, size);
  }

  /** KVM_GET_REG_LIST: every id getOneReg accepts. @throws {@link KvmError} */
  getRegList(): bigint[] {
    const probe = regListBuffer(0);
    const r = this.#h.bufTry("KVM_GET_REG_LIST", probe);
    if (r >= 0) return [];
    if (-r !== E2BIG) throw KvmError.fromErrno("KVM_GET_REG_LIST", -r);
    const n = Number(view(probe).getBigUint64(0, true));
    check(n <= 1 << 20, `KVM reported ${n} registers`, "TooLarge");
    const buf = regListBuffer(n);
    this.#h.buf("KVM_GET_REG_LIST", buf);
    return decodeRegList(buf);
  }

  /**
   * KVM_ENABLE_CAP on the vCPU (KVM_CAP_ENABLE_CAP; for example Hyper-V SynIC).
   * @throws {@link KvmError} `EINVAL` if the cap cannot be enabled per vCPU.
   */
  enableCap(cap: number, args: readonly (bigint | number)[] = [], flags = 0): number {
    check(Array.isArray(args) && args.length <= 4, "args: at most 4 values");
    return this.#h.buf("KVM_ENABLE_CAP", encodeEnableCap(checkUint(cap, "cap"), checkUint(flags, "flags"), args.map((a) => checkU64(a, "arg"))));
  }

  /** KVM_GET_TSC_KHZ. @throws {@link KvmError} */
  getTscKhz(): number {
    return this.#h.val("KVM_GET_TSC_KHZ");
  }

  /** KVM_SET_TSC_KHZ (KVM_CAP_TSC_CONTROL). @throws {@link KvmError} `EINVAL`/`EIO` for an unsupported rate. */
  setTscKhz(khz: number): void {
    this.#h.val("KVM_SET_TSC_KHZ", checkUint(khz, "khz"));
  }

  /**
   * KVM_TRANSLATE: the guest-physical address of guest-virtual `gva` under the
   * vCPU's current page tables.
   * @throws {@link KvmError} `OutOfRange` for a gva above 2^64.
   */
  translate(gva: bigint): Translation {
    const buf = new Uint8Array(24);
    const dv = view(buf);
    dv.setBigUint64(0, checkU64(gva, "gva"), true);
    this.#h.buf("KVM_TRANSLATE", buf);
    return { physicalAddress: dv.getBigUint64(8, true), valid: buf[16] !== 0, writeable: buf[17] !== 0, usermode: buf[18] !== 0 };
  }

  /** KVM_NMI: queues an NMI. @throws {@link KvmError} */
  nmi(): void {
    this.#h.val("KVM_NMI");
  }

  /** KVM_SMI: queues an SMI. @throws {@link KvmError} */
  smi(): void {
    this.#h.val("KVM_SMI");
  }

  /** KVM_INTERRUPT: queues external interrupt `vector` (only without in-kernel LAPIC). @throws {@link KvmError} `ENXIO` with irqchip. */
  interrupt(vector: number): void {
    const buf = new Uint8Array(4);
    view(buf).setUint32(0, checkUint(vector, "vector", 256), true);
    this.#h.buf("KVM_INTERRUPT", buf);
  }

  #attr(a: DeviceAttr): Uint8Array {
    check(a !== null && typeof a === "object", "attr must be an object");
    return encodeDeviceAttr(checkUint(a.group, "group"), checkU64(a.attr, "attr"), checkUint(a.flags ?? 0, "flags"));
  }

  /**
   * KVM_HAS_DEVICE_ATTR on the vCPU (KVM_CAP_VCPU_ATTRIBUTES): whether KVM knows
   * the vCPU attribute (on x86: KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET).
   * @throws {@link KvmError} `InvalidArgument`; errors other than ENXIO (no such attribute) and
   *   ENOTTY (a KVM without vCPU attributes), which give false.
   */
  hasDeviceAttr(a: DeviceAttr): boolean {
    const buf = this.#attr(a);
    try {
      this.#h.buf("KVM_HAS_DEVICE_ATTR", buf);
      return true;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "ENXIO" || code === "ENOTTY") return false;
      throw e;
    }
  }

  /**
   * KVM_GET_DEVICE_ATTR on the vCPU into `data` (8 bytes by default: x86's vCPU attributes are u64s).
   * @throws {@link KvmError} `InvalidArgument`; `ENXIO` for an attribute KVM does not know.
   */
  getDeviceAttr(a: DeviceAttr, data: Uint8Array = new Uint8Array(8)): Uint8Array {
    check(data instanceof Uint8Array && data.byteLength > 0, "data must be a non-empty Uint8Array");
    this.#h.ptr("KVM_GET_DEVICE_ATTR", this.#attr(a), DEVICE_ATTR.addr, data, data.byteLength);
    return data;
  }

  /** KVM_SET_DEVICE_ATTR on the vCPU from `data`. @throws {@link KvmError} `InvalidArgument`; `ENXIO`, `EINVAL` from KVM. */
  setDeviceAttr(a: DeviceAttr, data: Uint8Array): void {
    check(data instanceof Uint8Array && data.byteLength > 0, "data must be a non-empty Uint8Array");
    this.#h.ptr("KVM_SET_DEVICE_ATTR", this.#attr(a), DEVICE_ATTR.addr, data, data.byteLength);
  }

  /**
   * The vCPU's TSC offset (attribute KVM_VCPU_TSC_OFFSET of group KVM_VCPU_TSC_CTRL, Linux 5.16):
   * the guest's TSC is the host's TSC (scaled to the guest's rate) plus this, modulo 2^64.
   * @returns the offset as a u64 (a negative offset wraps).
   * @throws {@link KvmError} `ENXIO` on a KVM without the attribute (see {@link VcpuFd.hasDeviceAttr}).
   */
  getTscOffset(): bigint {
    return view(this.getDeviceAttr({ group: KVM_VCPU_TSC_CTRL, attr: KVM_VCPU_TSC_OFFSET })).getBigUint64(0, true);
  }

  /**
   * Sets the vCPU's TSC offset (KVM_VCPU_TSC_OFFSET; see {@link VcpuFd.getTscOffset}). Unlike a
   * write of IA32_TSC, whose value KVM pairs with the host TSC at the moment of the ioctl, the
   * offset fixes the guest TSC for every host TSC value: the precise way to carry a TSC across a
   * snapshot or migration (kernel Documentation/virt/kvm/devices/vcpu.rst).
   * @param offset - modulo 2^64: -2^63 .. 2^64-1 (a negative offset is stored as its u64 wrap).
   * @throws {@link KvmError} `OutOfRange` outside that range; `ENXIO` without the attribute.
   */
  setTscOffset(offset: bigint): void {
    check(typeof offset === "bigint" && offset >= -(1n << 63n) && offset < 1n << 64n, "offset must be a bigint in -2^63 .. 2^64-1", "OutOfRange");
    const data = new Uint8Array(8);
    view(data).setBigUint64(0, BigInt.asUintN(64, offset), true);
    this.setDeviceAttr({ group: KVM_VCPU_TSC_CTRL, attr: KVM_VCPU_TSC_OFFSET }, data);
  }

  /** KVM_KVMCLOCK_CTRL: tells the guest it was paused (avoids soft-lockup warnings). @throws {@link KvmError} `EINVAL` if kvmclock is off. */
  kvmclockCtrl(): void {
    this.#h.val("KVM_KVMCLOCK_CTRL");
  }

  /**
   * Takes the writes buffered in the coalesced MMIO/PIO ring (page
   * KVM_COALESCED_MMIO_PAGE_OFFSET of the vCPU mapping; the ring is shared by
   * the VM and read here through this vCPU) and advances its `first` index.
   * Ring indices are checked against the ring size, so a corrupt ring yields
   * an error, not an out-of-bounds read.
   * @throws {@link KvmError} `Unsupported` if the mapping has no ring page, `OutOfRange` for corrupt indices.
   */
  drainCoalescedMmio(): CoalescedWrite[] {
    const base = KVM_COALESCED_MMIO_PAGE_OFFSET * PAGE;
    check(this.#run.byteLength >= base + PAGE, "no coalesced MMIO page in the vCPU mapping", "Unsupported");
    const u32 = new Uint32Array(this.#run, base, 2);
    const dv = new DataView(this.#run, base, PAGE);
    const max = Math.floor((PAGE - 8) / 24);
    let first = Atomics.load(u32, 0);
    const last = Atomics.load(u32, 1);
    check(first < max && last < max, "coalesced ring indices out of range", "OutOfRange");
    const out: CoalescedWrite[] = [];
    while (first !== last) {
      const o = 8 + first * 24;
      const len = Math.min(dv.getUint32(o + 8, true), 8);
      out.push({
        address: Number(dv.getBigUint64(o, true)),
        len,
        pio: dv.getUint32(o + 12, true) !== 0,
        data: new Uint8Array(this.#run, base + o + 16, len).slice(),
      });
      first = (first + 1) % max;
    }
    Atomics.store(u32, 0, first);
    return out;
  }

  #mapRing(bytes: number): void {
    this.#ring = MmapRegion.fromFd(this.#h.fd, bytes, { shared: true, offset: KVM_DIRTY_LOG_PAGE_OFFSET * PAGE });
    this.#ringView = new DataView(this.#ring.buffer);
    this.#ringU32 = new Uint32Array(this.#ring.buffer);
  }

  /**
   * Collects the dirty ring's new entries and marks them for reset; call
   * {@link VmFd.resetDirtyRings} afterwards. Only on the VcpuFd from
   * createVcpu, with a ring enabled before the vCPU was created.
   * @throws {@link KvmError} `Unsupported` without a ring.
   */
  harvestDirtyRing(): DirtyGfn[] {
    const dv = this.#ringView;
    const u32 = this.#ringU32;
    check(dv !== undefined && u32 !== undefined, "no dirty ring (VmFd.enableDirtyRing before createVcpu)", "Unsupported");
    const n = dv.byteLength / DIRTY_GFN.size;
    const out: DirtyGfn[] = [];
    for (let k = 0; k < n; k++) {
      const i = this.#ringIndex % n;
      const o = i * DIRTY_GFN.size;
      // flags is read with acquire and written with release (Atomics), as KVM_CAP_DIRTY_LOG_RING_ACQ_REL requires.
      const flags = Atomics.load(u32, o >>> 2);
      if ((flags & KVM_DIRTY_GFN_F_DIRTY) === 0) break;
      out.push({ slot: dv.getUint32(o + DIRTY_GFN.slot, true), offset: dv.getBigUint64(o + DIRTY_GFN.offset, true) });
      Atomics.store(u32, o >>> 2, KVM_DIRTY_GFN_F_RESET);
      this.#ringIndex++;
    }
    return out;
  }

  /**
   * Closes the vCPU fd (if owned) and unmaps its kvm_run page from this
   * VcpuFd. A borrowed VcpuFd (see {@link VcpuFd.fromTransferable}) clears the
   * kick target if it still names this thread, so kicks after the close do not
   * signal a thread id the system may have reused. Stop the thread running it
   * first. Idempotent.
   * @throws {@link KvmError}
   */
  close(): void {
    if (this.#h.closed) return;
    this.#runFd = -1;
    // Forget the running thread so a later kick() cannot signal a reused tid:
    // the owner always, a borrower (a worker) only if the cell still names it.
    if (this.#h.owned) Atomics.store(this.#tid, 0, 0);
    else if (this.#tidRecorded) Atomics.compareExchange(this.#tid, 0, gettid(), 0);
    this.#ring?.close();
    this.#region?.close();
    this.#h.close();
  }
}

function checkObj<T>(x: T): T {
  check(x !== null && typeof x === "object", "expected an object");
  return x;
}
