// struct kvm_fpu, kvm_vcpu_events, kvm_debugregs, kvm_xcrs, kvm_guest_debug
// (arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/kvm.h).
import { setU64, u64, view } from "./bytes.js";

/** FPU/SSE state (struct kvm_fpu, 416 bytes). */
export interface Fpu {
  /** fpr[8][16]: the x87 registers, 128 bytes. */
  fpr: Uint8Array;
  fcw: number;
  fsw: number;
  /** Abridged tag word, in FXSAVE format. */
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  /** xmm[16][16]: 256 bytes. */
  xmm: Uint8Array;
  mxcsr: number;
}
export const KVM_FPU_SIZE = 416;
export const FPU_OFF = { fpr: 0, fcw: 128, fsw: 130, ftwx: 132, lastOpcode: 134, lastIp: 136, lastDp: 144, xmm: 152, mxcsr: 408 } as const;

export function decodeFpu(buf: Uint8Array): Fpu {
  const dv = view(buf);
  return {
    fpr: buf.slice(0, 128),
    fcw: dv.getUint16(FPU_OFF.fcw, true),
    fsw: dv.getUint16(FPU_OFF.fsw, true),
    ftwx: dv.getUint8(FPU_OFF.ftwx),
    lastOpcode: dv.getUint16(FPU_OFF.lastOpcode, true),
    lastIp: u64(dv, FPU_OFF.lastIp),
    lastDp: u64(dv, FPU_OFF.lastDp),
    xmm: buf.slice(FPU_OFF.xmm, FPU_OFF.xmm + 256),
    mxcsr: dv.getUint32(FPU_OFF.mxcsr, true),
  };
}

export function encodeFpu(f: Fpu): Uint8Array {
  const buf = new Uint8Array(KVM_FPU_SIZE);
  const dv = view(buf);
  buf.set(f.fpr.subarray(0, 128), 0);
  dv.setUint16(FPU_OFF.fcw, f.fcw, true);
  dv.setUint16(FPU_OFF.fsw, f.fsw, true);
  dv.setUint8(FPU_OFF.ftwx, f.ftwx);
  dv.setUint16(FPU_OFF.lastOpcode, f.lastOpcode, true);
  setU64(dv, FPU_OFF.lastIp, f.lastIp);
  setU64(dv, FPU_OFF.lastDp, f.lastDp);
  buf.set(f.xmm.subarray(0, 256), FPU_OFF.xmm);
  dv.setUint32(FPU_OFF.mxcsr, f.mxcsr, true);
  return buf;
}

/** Pending exceptions, interrupts, NMIs and SMIs (struct kvm_vcpu_events, 64 bytes). */
export interface VcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  /** KVM_VCPUEVENT_VALID_* */
  flags: number;
  smi: { smm: number; pending: number; smmInsideNmi: number; latchedInit: number };
  tripleFault: { pending: number };
  exceptionHasPayload: number;
  exceptionPayload: bigint;
}
export const KVM_VCPU_EVENTS_SIZE = 64;
export const VCPU_EVENTS_OFF = {
  exception: 0, interrupt: 8, nmi: 12, sipiVector: 16, flags: 20, smi: 24,
  tripleFault: 28, exceptionHasPayload: 55, exceptionPayload: 56,
} as const;

export function decodeVcpuEvents(buf: Uint8Array): VcpuEvents {
  const dv = view(buf);
  const b = (o: number) => dv.getUint8(o);
  return {
    exception: { injected: b(0), nr: b(1), hasErrorCode: b(2), pending: b(3), errorCode: dv.getUint32(4, true) },
    interrupt: { injected: b(8), nr: b(9), soft: b(10), shadow: b(11) },
    nmi: { injected: b(12), pending: b(13), masked: b(14) },
    sipiVector: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    smi: { smm: b(24), pending: b(25), smmInsideNmi: b(26), latchedInit: b(27) },
    tripleFault: { pending: b(28) },
    exceptionHasPayload: b(55),
    exceptionPayload: u64(dv, 56),
  };
}

export function encodeVcpuEvents(e: VcpuEvents): Uint8Array {
  const buf = new Uint8Array(KVM_VCPU_EVENTS_SIZE);
  const dv = view(buf);
  const s = (o: number, v: number) => dv.setUint8(o, v);
  s(0, e.exception.injected); s(1, e.exception.nr); s(2, e.exception.hasErrorCode); s(3, e.exception.pending);
  dv.setUint32(4, e.exception.errorCode, true);
  s(8, e.interrupt.injected); s(9, e.interrupt.nr); s(10, e.interrupt.soft); s(11, e.interrupt.shadow);
  s(12, e.nmi.injected); s(13, e.nmi.pending); s(14, e.nmi.masked);
  dv.setUint32(16, e.sipiVector, true);
  dv.setUint32(20, e.flags, true);
  s(24, e.smi.smm); s(25, e.smi.pending); s(26, e.smi.smmInsideNmi); s(27, e.smi.latchedInit);
  s(28, e.tripleFault.pending);
  s(55, e.exceptionHasPayload);
  setU64(dv, 56, e.exceptionPayload);
  return buf;
}

/** Debug registers (struct kvm_debugregs, 128 bytes). */
export interface DebugRegs {
  db: [bigint, bigint, bigint, bigint];
  dr6: bigint;
  dr7: bigint;
  flags: bigint;
}
export const KVM_DEBUGREGS_SIZE = 128;
export const DEBUGREGS_OFF = { db: 0, dr6: 32, dr7: 40, flags: 48 } as const;

export function decodeDebugRegs(buf: Uint8Array): DebugRegs {
  const dv = view(buf);
  return { db: [u64(dv, 0), u64(dv, 8), u64(dv, 16), u64(dv, 24)], dr6: u64(dv, 32), dr7: u64(dv, 40), flags: u64(dv, 48) };
}

export function encodeDebugRegs(d: DebugRegs): Uint8Array {
  const buf = new Uint8Array(KVM_DEBUGREGS_SIZE);
  const dv = view(buf);
  d.db.forEach((v, i) => setU64(dv, 8 * i, v));
  setU64(dv, 32, d.dr6);
  setU64(dv, 40, d.dr7);
  setU64(dv, 48, d.flags);
  return buf;
}

/** One extended control register (struct kvm_xcr). */
export interface Xcr {
  xcr: number;
  value: bigint;
}
export const KVM_XCRS_SIZE = 392;
export const KVM_MAX_XCRS_ENTRIES = 16;
export const XCRS_OFF = { nrXcrs: 0, flags: 4, xcrs: 8 } as const;

export function decodeXcrs(buf: Uint8Array): Xcr[] {
  const dv = view(buf);
  const n = Math.min(dv.getUint32(0, true), KVM_MAX_XCRS_ENTRIES);
  const out: Xcr[] = [];
  for (let i = 0; i < n; i++) out.push({ xcr: dv.getUint32(8 + 16 * i, true), value: u64(dv, 16 + 16 * i) });
  return out;
}

export function encodeXcrs(xcrs: readonly Xcr[]): Uint8Array {
  const buf = new Uint8Array(KVM_XCRS_SIZE);
  const dv = view(buf);
  dv.setUint32(0, xcrs.length, true);
  xcrs.forEach((x, i) => {
    dv.setUint32(8 + 16 * i, x.xcr, true);
    setU64(dv, 16 + 16 * i, x.value);
  });
  return buf;
}

/** Guest debug control (struct kvm_guest_debug, 72 bytes). */
export interface GuestDebug {
  /** KVM_GUESTDBG_* flags. */
  control: number;
  /** debugreg[8]: DR0-DR3, (4, 5 unused), DR6, DR7. */
  debugreg?: readonly bigint[];
}
export const KVM_GUEST_DEBUG_SIZE = 72;

export function encodeGuestDebug(g: GuestDebug): Uint8Array {
  const buf = new Uint8Array(KVM_GUEST_DEBUG_SIZE);
  const dv = view(buf);
  dv.setUint32(0, g.control, true);
  (g.debugreg ?? []).slice(0, 8).forEach((v, i) => setU64(dv, 8 + 8 * i, v));
  return buf;
}
