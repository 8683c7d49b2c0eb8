// One vCPU's saved state: what KVM holds for it, read and written through the
// kvm-ioctls VcpuFd (or any object with the same methods: the unit tests use
// a recorder). The order of the writes on restore matters and follows what
// KVM needs: CPUID first (it decides which MSRs and XSAVE features exist),
// TSC frequency before the TSC, the LAPIC before MSRs (TSC_DEADLINE lives in
// the LAPIC's timer mode), vCPU events last but one (pending exceptions and
// NMIs refer to the registers set before them), GUEST_SSP after the CET MSRs.
import { GUEST_SSP_REG_ID, type CpuidEntry, type DebugRegs, type MsrEntry, type Regs, type Sregs2, type VcpuEvents, type Xcr } from "@ts-vmm/kvm-ioctls";

/** MSR_IA32_TSC. */
export const MSR_IA32_TSC = 0x10;
/** MSR_IA32_TSC_DEADLINE: set after the TSC and the LAPIC. */
export const MSR_IA32_TSC_DEADLINE = 0x6e0;
/** IA32_XSS (supervisor XSAVE components, CET among them). */
export const MSR_IA32_XSS = 0xda0;
/** IA32_U_CET. */
export const MSR_IA32_U_CET = 0x6a0;
/** IA32_S_CET. */
export const MSR_IA32_S_CET = 0x6a2;
/** IA32_PL0_SSP .. IA32_PL3_SSP are 0x6a4 .. 0x6a7. */
export const MSR_IA32_PL0_SSP = 0x6a4;
/** IA32_INTERRUPT_SSP_TABLE_ADDR. */
export const MSR_IA32_INT_SSP_TAB = 0x6a8;
/** Most MSRs per KVM_GET/SET_MSRS (kvm-ioctls' limit). */
const MSR_CHUNK = 255;

/** The VcpuFd methods a save or restore uses (the seam the unit tests record on). */
export interface VcpuStateIo {
  /** KVM_GET_REGS: the general-purpose registers. */
  getRegs(): Regs;
  /** KVM_SET_REGS. */
  setRegs(r: Regs): void;
  /** KVM_GET_SREGS2: segments, control registers, EFER, APIC base and the PDPTEs. */
  getSregs2(): Sregs2;
  /** KVM_SET_SREGS2. */
  setSregs2(s: Sregs2): void;
  /** The XSAVE area size the kernel uses: max(4096, KVM_CAP_XSAVE2). */
  readonly xsaveSize: number;
  /** KVM_GET_XSAVE: the legacy 4 KiB XSAVE area. */
  getXsave(): Uint8Array;
  /** KVM_GET_XSAVE2: the full XSAVE area of {@link VcpuStateIo.xsaveSize} bytes. */
  getXsave2(): Uint8Array;
  /** KVM_SET_XSAVE with an area from either getter. */
  setXsave(area: Uint8Array): void;
  /** KVM_GET_XCRS: the extended control registers (XCR0). */
  getXcrs(): Xcr[];
  /** KVM_SET_XCRS. */
  setXcrs(x: readonly Xcr[]): void;
  /** KVM_GET_MSRS for `indices` (at most one chunk's worth per call). */
  getMsrs(indices: readonly number[]): MsrEntry[];
  /** KVM_SET_MSRS; returns how many entries KVM set (fewer means it refused the next one). */
  setMsrs(entries: readonly MsrEntry[]): number;
  /** KVM_GET_CPUID2: the CPUID table the vCPU was given. */
  getCpuid2(): CpuidEntry[];
  /** KVM_SET_CPUID2. */
  setCpuid2(entries: readonly CpuidEntry[]): void;
  /** KVM_GET_LAPIC: the 1 KiB local APIC register page. */
  getLapic(): Uint8Array;
  /** KVM_SET_LAPIC. */
  setLapic(regs: Uint8Array): void;
  /** KVM_GET_VCPU_EVENTS: pending exceptions, interrupts, NMIs and SMM state. */
  getVcpuEvents(): VcpuEvents;
  /** KVM_SET_VCPU_EVENTS. */
  setVcpuEvents(e: VcpuEvents): void;
  /** KVM_GET_MP_STATE (a `KVM_MP_STATE_*` value). */
  getMpState(): number;
  /** KVM_SET_MP_STATE. */
  setMpState(s: number): void;
  /** KVM_GET_DEBUGREGS: DR0-DR3, DR6, DR7. */
  getDebugRegs(): DebugRegs;
  /** KVM_SET_DEBUGREGS. */
  setDebugRegs(d: DebugRegs): void;
  /** KVM_GET_ONE_REG of a 64-bit register (`id` as KVM encodes it, e.g. the CET shadow stack pointer). */
  getOneRegU64(id: bigint): bigint;
  /** KVM_SET_ONE_REG of a 64-bit register. */
  setOneReg(id: bigint, value: bigint): void;
  /** KVM_GET_TSC_KHZ: the vCPU's TSC frequency. */
  getTscKhz(): number;
  /** KVM_SET_TSC_KHZ. */
  setTscKhz(khz: number): void;
}

/** What a snapshot keeps of one vCPU. */
export interface VcpuSnapshot {
  readonly id: number;
  readonly cpuid: readonly CpuidEntry[];
  readonly regs: Regs;
  readonly sregs2: Sregs2;
  /** KVM_GET_XSAVE2 (or KVM_GET_XSAVE without KVM_CAP_XSAVE2): xsaveSize bytes. */
  readonly xsave: Uint8Array;
  readonly xcrs: readonly Xcr[];
  /** Every MSR of the save list, in restore order (IA32_TSC first, TSC_DEADLINE last). */
  readonly msrs: readonly MsrEntry[];
  readonly lapic: Uint8Array;
  readonly events: VcpuEvents;
  readonly mpState: number;
  readonly debugRegs: DebugRegs;
  /** KVM_GET_TSC_KHZ, 0 if KVM could not say. */
  readonly tscKhz: number;
  /** The shadow-stack pointer (KVM_GET_ONE_REG of KVM_REG_GUEST_SSP), when the guest has SHSTK. */
  readonly guestSsp?: bigint;
}

const leaf = (cpuid: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined =>
  cpuid.find((e) => e.function === fn && e.index === index) ?? (index === 0 ? cpuid.find((e) => e.function === fn) : undefined);

/** Whether a CPUID table gives the guest CET shadow stacks (leaf 7.0 ECX bit 7). */
export function cpuidHasShstk(cpuid: readonly CpuidEntry[]): boolean {
  return ((leaf(cpuid, 7)?.ecx ?? 0) >>> 7 & 1) === 1;
}
/** Whether a CPUID table gives the guest CET indirect-branch tracking (leaf 7.0 EDX bit 20). */
export function cpuidHasIbt(cpuid: readonly CpuidEntry[]): boolean {
  return ((leaf(cpuid, 7)?.edx ?? 0) >>> 20 & 1) === 1;
}
/** Whether a CPUID table gives the guest XSAVES (leaf 0xD.1 EAX bit 3), which makes IA32_XSS exist. */
export function cpuidHasXsaves(cpuid: readonly CpuidEntry[]): boolean {
  return ((leaf(cpuid, 0xd, 1)?.eax ?? 0) >>> 3 & 1) === 1;
}

/** The CET MSRs a guest with this CPUID has (none without SHSTK and IBT). */
export function cetMsrs(cpuid: readonly CpuidEntry[]): number[] {
  const shstk = cpuidHasShstk(cpuid);
  if (!shstk && !cpuidHasIbt(cpuid)) return [];
  const out = [MSR_IA32_U_CET, MSR_IA32_S_CET];
  if (shstk) out.push(MSR_IA32_PL0_SSP, MSR_IA32_PL0_SSP + 1, MSR_IA32_PL0_SSP + 2, MSR_IA32_PL0_SSP + 3, MSR_IA32_INT_SSP_TAB);
  return out;
}

/**
 * The MSRs to save for a vCPU: those of KVM_GET_MSR_INDEX_LIST that
 * KVM_GET_MSRS reads for this vCPU (one it refuses is left out, as it stops
 * a batch), then the ones this guest must have saved whatever the list says:
 * IA32_XSS with XSAVES, the CET MSRs with SHSTK or IBT. Ordered for restore.
 * @returns the indices and the required ones KVM refused to read (an empty list normally).
 */
export function msrsToSave(vcpu: Pick<VcpuStateIo, "getMsrs">, indexList: readonly number[], cpuid: readonly CpuidEntry[]): { indices: number[]; refusedRequired: number[] } {
  const required = [...(cpuidHasXsaves(cpuid) ? [MSR_IA32_XSS] : []), ...cetMsrs(cpuid)];
  const want = [...new Set([...indexList, ...required])];
  const readable: number[] = [];
  let i = 0;
  while (i < want.length) {
    const batch = want.slice(i, i + MSR_CHUNK);
    const got = vcpu.getMsrs(batch).length;
    readable.push(...batch.slice(0, got));
    i += got < batch.length ? got + 1 : got; // skip the one KVM refused
  }
  const set = new Set(readable);
  return { indices: orderForRestore(readable), refusedRequired: required.filter((m) => !set.has(m)) };
}

function orderForRestore(indices: readonly number[]): number[] {
  const rest = indices.filter((m) => m !== MSR_IA32_TSC && m !== MSR_IA32_TSC_DEADLINE);
  return [...(indices.includes(MSR_IA32_TSC) ? [MSR_IA32_TSC] : []), ...rest, ...(indices.includes(MSR_IA32_TSC_DEADLINE) ? [MSR_IA32_TSC_DEADLINE] : [])];
}

/**
 * Reads a vCPU's state. The vCPU must be out of KVM_RUN (paused).
 * @param xsave2 - whether KVM has KVM_CAP_XSAVE2 (then the full area is read).
 * @throws Error from KVM, or if an MSR of `msrIndices` cannot be read.
 */
export function saveVcpu(vcpu: VcpuStateIo, id: number, msrIndices: readonly number[], xsave2: boolean): VcpuSnapshot {
  const cpuid = vcpu.getCpuid2();
  const msrs: MsrEntry[] = [];
  for (let i = 0; i < msrIndices.length; i += MSR_CHUNK) {
    const batch = msrIndices.slice(i, i + MSR_CHUNK);
    const got = vcpu.getMsrs(batch);
    if (got.length !== batch.length) throw new Error(`vCPU ${id}: KVM_GET_MSRS stopped at MSR 0x${batch[got.length]!.toString(16)}`);
    msrs.push(...got);
  }
  let tscKhz = 0;
  try {
    tscKhz = vcpu.getTscKhz();
  } catch {
    tscKhz = 0;
  }
  const base: VcpuSnapshot = {
    id,
    cpuid,
    regs: vcpu.getRegs(),
    sregs2: vcpu.getSregs2(),
    xsave: xsave2 ? vcpu.getXsave2() : vcpu.getXsave(),
    xcrs: vcpu.getXcrs(),
    msrs,
    lapic: vcpu.getLapic(),
    events: vcpu.getVcpuEvents(),
    mpState: vcpu.getMpState(),
    debugRegs: vcpu.getDebugRegs(),
    tscKhz,
  };
  return cpuidHasShstk(cpuid) ? { ...base, guestSsp: vcpu.getOneRegU64(GUEST_SSP_REG_ID) } : base;
}

/**
 * The snapshot with its IA32_TSC replaced by `tsc` (read again next to the
 * VM's clock: see readClockAndTscs in take.ts); unchanged without an IA32_TSC entry.
 */
export function withTsc(s: VcpuSnapshot, tsc: bigint): VcpuSnapshot {
  return { ...s, msrs: s.msrs.map((m) => (m.index === MSR_IA32_TSC ? { index: m.index, data: tsc } : m)) };
}

/** The vCPU's TSC offset (KVM_VCPU_TSC_OFFSET), the seam {@link readClockAndTscs} and the restore use. */
export interface TscOffsetIo {
  getTscOffset(): bigint;
  setTscOffset(offset: bigint): void;
}

/** KVM_CLOCK_HOST_TSC: KVM_GET_CLOCK's host_tsc is the host TSC at the instant of its clock. */
const CLOCK_HOST_TSC = 8;
const U64 = (1n << 64n) - 1n;

/**
 * The VM's clock and every vCPU's TSC at one instant. Where KVM can say it
 * (KVM_GET_CLOCK with KVM_CLOCK_HOST_TSC, the KVM_VCPU_TSC_OFFSET attribute
 * and `offsets` true: no TSC scaling), each TSC is the clock's host TSC plus
 * the vCPU's offset, exactly at the clock's instant and the same instant for
 * every vCPU (`exact`). Otherwise KVM_GET_CLOCK and then every vCPU's
 * IA32_TSC, back to back, which part by the time the ioctls take (ms in the
 * emulated nested tier). A restore sets the clock and the TSCs as they are
 * paired here: see take.ts, ClockRestore.
 * @param offsets - whether a TSC may be read as host TSC + offset (false when
 *   the vCPUs run at a rate other than the host's: the offset is then in scaled units).
 * @param tscKhz - the vCPUs' TSC rate, for the check that vCPU 0's IA32_TSC read
 *   right after lies at most 10 s of cycles past the exact value (else the offsets are not used).
 * @throws Error from KVM, or if KVM_GET_MSRS cannot read IA32_TSC.
 */
export function readClockAndTscs(
  vm: { getClock(): { clock: bigint; flags?: number; hostTsc?: bigint } },
  vcpus: readonly (Pick<VcpuStateIo, "getMsrs"> & Partial<Pick<TscOffsetIo, "getTscOffset">>)[],
  offsets = false,
  tscKhz = 0,
): { clock: bigint; tscs: bigint[]; exact: boolean } {
  const c = vm.getClock();
  const readTsc = (v: Pick<VcpuStateIo, "getMsrs">, id: number): bigint => {
    const got = v.getMsrs([MSR_IA32_TSC]);
    if (got.length !== 1) throw new Error(`vCPU ${id}: KVM_GET_MSRS cannot read IA32_TSC`);
    return got[0]!.data;
  };
  if (offsets && ((c.flags ?? 0) & CLOCK_HOST_TSC) !== 0 && c.hostTsc !== undefined && tscKhz > 0) {
    let tscs: bigint[] | undefined;
    try {
      tscs = vcpus.map((v) => {
        if (v.getTscOffset === undefined) throw new Error("no TSC offset");
        return (c.hostTsc! + v.getTscOffset()) & U64;
      });
    } catch {
      tscs = undefined; // a KVM without KVM_VCPU_TSC_OFFSET (before 5.16): ENXIO
    }
    if (tscs !== undefined && ((readTsc(vcpus[0]!, 0) - tscs[0]!) & U64) < BigInt(tscKhz) * 10_000n) return { clock: c.clock, tscs, exact: true };
  }
  return { clock: c.clock, tscs: vcpus.map(readTsc), exact: false };
}

/** MSR_KVM_SYSTEM_TIME_NEW: where the guest put this vCPU's kvm-clock page (bit 0: enabled). */
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;

/**
 * The guest's own kvm-clock reading, ns: its pvclock page (struct
 * pvclock_vcpu_time_info, 32 bytes: version, tsc_timestamp at 8,
 * system_time at 16, tsc_to_system_mul at 24, tsc_shift at 28) applied to
 * the vCPU's TSC `tsc`. KVM_GET_CLOCK scales the host TSC with the host's
 * rate, the guest scales its TSC with the page's mul/shift; the two part by
 * the difference of those rates times the time since KVM last wrote the page
 * (seen in the nested tier: ~180 ppm, 3 ms after 17 s of uptime). A restore
 * sets the clock the guest saw, as QEMU does with a clock it cannot trust.
 * @returns null for a page being updated (odd version) or a TSC before its timestamp.
 */
export function pvclockNs(page: Uint8Array, tsc: bigint): bigint | null {
  if (page.byteLength < 32) throw new RangeError("a pvclock page is 32 bytes");
  const dv = new DataView(page.buffer, page.byteOffset, 32);
  if ((dv.getUint32(0, true) & 1) !== 0) return null;
  const stamp = dv.getBigUint64(8, true);
  if (tsc < stamp) return null;
  const shift = dv.getInt8(28);
  let d = tsc - stamp;
  d = shift < 0 ? d >> BigInt(-shift) : (d << BigInt(shift)) & ((1n << 64n) - 1n);
  return (dv.getBigUint64(16, true) + ((d * BigInt(dv.getUint32(24, true))) >> 32n)) & ((1n << 64n) - 1n);
}

/**
 * Writes a saved state into a new vCPU (created, not run yet).
 * @param hostTscKhz - the new vCPU's TSC rate before the restore; the saved rate is set when it differs.
 * @param beforeMsrs - called right before the MSRs (IA32_TSC first) are written: where the
 *   VM's clock and the vCPU's TSC are set (take.ts, ClockRestore). When it returns true it
 *   has set the TSC (as an offset) and IA32_TSC is left out of the MSRs.
 * @throws Error from KVM (the caller names the vCPU), or if KVM_SET_MSRS refuses an MSR.
 */
export function restoreVcpu(vcpu: VcpuStateIo, s: VcpuSnapshot, hostTscKhz: number, beforeMsrs?: () => boolean | void): void {
  vcpu.setCpuid2(s.cpuid);
  if (s.tscKhz > 0 && s.tscKhz !== hostTscKhz) vcpu.setTscKhz(s.tscKhz);
  vcpu.setMpState(s.mpState);
  vcpu.setRegs(s.regs);
  vcpu.setSregs2(s.sregs2);
  vcpu.setXsave(s.xsave);
  vcpu.setXcrs(s.xcrs);
  vcpu.setDebugRegs(s.debugRegs);
  vcpu.setLapic(s.lapic);
  const tscSet = beforeMsrs?.() === true;
  const msrs = tscSet ? s.msrs.filter((m) => m.index !== MSR_IA32_TSC) : s.msrs;
  for (let i = 0; i < msrs.length; i += MSR_CHUNK) {
    const batch = msrs.slice(i, i + MSR_CHUNK);
    const n = vcpu.setMsrs(batch);
    if (n !== batch.length) throw new Error(`KVM_SET_MSRS refused MSR 0x${batch[n]!.index.toString(16)} (value 0x${batch[n]!.data.toString(16)})`);
  }
  if (s.guestSsp !== undefined) vcpu.setOneReg(GUEST_SSP_REG_ID, s.guestSsp);
  vcpu.setVcpuEvents(s.events);
}
