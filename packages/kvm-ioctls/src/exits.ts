import { ExitReason } from "./generated/kvm-constants.js";
import { RUN, RUN_EXIT } from "./layouts/kvm-run.js";

/**
 * Why KVM_RUN returned: a discriminated union on `kind`, decoded from the
 * vCPU's kvm_run page. Exits the decoder does not know are `Unknown` with the
 * raw reason; none is dropped.
 *
 * Safety: every `data` is a view into the shared kvm_run page, valid until the
 * next `run()` of this vCPU. For `IoIn` and `MmioRead` the handler writes the
 * value the guest reads into `data` before calling `run()` again.
 *
 * The objects of the four hot exits (`IoOut`, `IoIn`, `MmioRead`, `MmioWrite`) are
 * reused: each VcpuFd has one of each, rewritten in place by the next `run()`
 * that returns that kind, so a userspace exit allocates nothing. Copy the fields
 * out to keep them past the next `run()`.
 */
export type VcpuExit =
  | IoExit<"IoOut">
  | IoExit<"IoIn">
  | MmioExit<"MmioRead">
  | MmioExit<"MmioWrite">
  | { readonly kind: "Hlt" }
  | { readonly kind: "Shutdown" }
  | { readonly kind: "IrqWindowOpen" }
  | { readonly kind: "Intr" }
  | { readonly kind: "DirtyRingFull" }
  | { readonly kind: "FailEntry"; readonly hardwareEntryFailureReason: bigint; readonly cpu: number }
  | { readonly kind: "Exception"; readonly exception: number; readonly errorCode: number }
  | { readonly kind: "InternalError"; readonly suberror: number; readonly data: readonly bigint[] }
  | { readonly kind: "SystemEvent"; readonly type: number; readonly data: readonly bigint[] }
  | { readonly kind: "IoapicEoi"; readonly vector: number }
  | { readonly kind: "Hypercall"; readonly nr: bigint; readonly args: readonly bigint[]; readonly flags: bigint }
  | MsrExit<"X86Rdmsr">
  | MsrExit<"X86Wrmsr">
  | { readonly kind: "Debug"; readonly exception: number; readonly pc: bigint; readonly dr6: bigint; readonly dr7: bigint }
  | { readonly kind: "MemoryFault"; readonly flags: bigint; readonly gpa: number; readonly size: number }
  | {
      readonly kind: "Unknown";
      /** The raw kvm_run.exit_reason (Hyper-V 27, Xen 34, bus lock 33, notify 37, TPR access 12, ...). */
      readonly reason: number;
      /** kvm_run.hw.hardware_exit_reason: only for KVM_EXIT_UNKNOWN (reason 0), where KVM fills it. */
      readonly hardwareExitReason?: bigint;
    };

/** Port I/O exit. `data` holds `size * count` bytes (count > 1 for string I/O). */
export interface IoExit<K extends "IoOut" | "IoIn"> {
  readonly kind: K;
  readonly port: number;
  /** Access width in bytes: 1, 2 or 4. */
  readonly size: number;
  /** Repetitions (REP INS/OUTS). */
  readonly count: number;
  /** View into kvm_run; fill it for IoIn before the next run(). */
  readonly data: Uint8Array;
}

/** MMIO exit. `address` is a guest-physical address (< 2^52, exact as a number). */
export interface MmioExit<K extends "MmioRead" | "MmioWrite"> {
  readonly kind: K;
  readonly address: number;
  /** Access width in bytes, 1 to 8. */
  readonly len: number;
  /** View into kvm_run's mmio.data; fill it for MmioRead before the next run(). */
  readonly data: Uint8Array;
}

/**
 * RDMSR/WRMSR forwarded to user space (KVM_CAP_X86_USER_SPACE_MSR). Answer it
 * with {@link VcpuFd.setMsrExitResult} before the next run().
 */
export interface MsrExit<K extends "X86Rdmsr" | "X86Wrmsr"> {
  readonly kind: K;
  readonly index: number;
  /** KVM_MSR_EXIT_REASON_* */
  readonly reason: number;
  /** Value written by the guest (X86Wrmsr); 0 for X86Rdmsr. */
  readonly data: bigint;
}

/** Every `kind` of {@link VcpuExit}. */
export type VcpuExitKind = VcpuExit["kind"];

const HLT: VcpuExit = Object.freeze({ kind: "Hlt" });
const SHUTDOWN: VcpuExit = Object.freeze({ kind: "Shutdown" });
const INTR: VcpuExit = Object.freeze({ kind: "Intr" });
const IRQ_WINDOW: VcpuExit = Object.freeze({ kind: "IrqWindowOpen" });
const DIRTY_RING_FULL: VcpuExit = Object.freeze({ kind: "DirtyRingFull" });
/** The shared `Intr` exit object. @internal */
export const INTR_EXIT = INTR;

/** The reused object of an I/O exit (the fields are rewritten by each decode). */
interface MutIoExit<K extends "IoOut" | "IoIn"> {
  kind: K;
  port: number;
  size: number;
  count: number;
  data: Uint8Array;
}

/** The reused object of an MMIO exit. */
interface MutMmioExit<K extends "MmioRead" | "MmioWrite"> {
  kind: K;
  address: number;
  len: number;
  data: Uint8Array;
}

/**
 * Decodes exits from one vCPU's kvm_run mapping. Views over the mapping are
 * made once; `data` views are cached by (offset, length) and the IoOut, IoIn,
 * MmioRead and MmioWrite exit objects are this decoder's own, rewritten in
 * place, so the hot path allocates nothing.
 * @internal
 */
export class ExitDecoder {
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #size: number;
  #ioView: Uint8Array | undefined;
  #ioOff = -1;
  #ioLen = -1;
  readonly #mmioViews: Uint8Array[] = [];
  readonly #ioOut: MutIoExit<"IoOut">;
  readonly #ioIn: MutIoExit<"IoIn">;
  readonly #mmioRead: MutMmioExit<"MmioRead">;
  readonly #mmioWrite: MutMmioExit<"MmioWrite">;

  constructor(run: SharedArrayBuffer | ArrayBuffer) {
    this.#u8 = new Uint8Array(run);
    this.#u16 = new Uint16Array(run, 0, run.byteLength >>> 1);
    this.#u32 = new Uint32Array(run, 0, run.byteLength >>> 2);
    this.#size = run.byteLength;
    for (let len = 0; len <= 8; len++) this.#mmioViews.push(new Uint8Array(run, RUN_EXIT.mmioData, len));
    const none = this.#mmioViews[0]!;
    // Same field order in every object of a kind, so each keeps one hidden class.
    this.#ioOut = { kind: "IoOut", port: 0, size: 0, count: 0, data: none };
    this.#ioIn = { kind: "IoIn", port: 0, size: 0, count: 0, data: none };
    this.#mmioRead = { kind: "MmioRead", address: 0, len: 0, data: none };
    this.#mmioWrite = { kind: "MmioWrite", address: 0, len: 0, data: none };
  }

  #u64(off: number): bigint {
    return BigInt(this.#u32[off >>> 2]!) | (BigInt(this.#u32[(off >>> 2) + 1]!) << 32n);
  }

  #u64s(off: number, n: number): bigint[] {
    const out: bigint[] = [];
    for (let i = 0; i < n; i++) out.push(this.#u64(off + 8 * i));
    return out;
  }

  /** The raw exit_reason. */
  reason(): number {
    return this.#u32[RUN.exitReason >>> 2]!;
  }

  /** Sets exit_reason to KVM_EXIT_UNKNOWN (0), so a stale reason is not decoded twice. */
  clearReason(): void {
    this.#u32[RUN.exitReason >>> 2] = 0;
  }

  decode(): VcpuExit {
    const u32 = this.#u32;
    const reason = u32[RUN.exitReason >>> 2]!;
    switch (reason) {
      case 2 /* ExitReason.IO */: {
        const u8 = this.#u8;
        const size = u8[RUN_EXIT.ioSize]!;
        const count = u32[RUN_EXIT.ioCount >>> 2]!;
        const off = u32[RUN_EXIT.ioDataOffset >>> 2]!;
        const offHi = u32[(RUN_EXIT.ioDataOffset >>> 2) + 1]!;
        const len = size * count;
        if (offHi !== 0 || off + len > this.#size || len === 0) {
          return { kind: "Unknown", reason };
        }
        let data = this.#ioView;
        if (off !== this.#ioOff || len !== this.#ioLen || data === undefined) {
          data = this.#ioView = new Uint8Array(u8.buffer, off, len);
          this.#ioOff = off;
          this.#ioLen = len;
        }
        const e = u8[RUN_EXIT.ioDirection] === 1 ? this.#ioOut : this.#ioIn;
        e.port = this.#u16[RUN_EXIT.ioPort >>> 1]!;
        e.size = size;
        e.count = count;
        e.data = data;
        return e;
      }
      case 6 /* ExitReason.MMIO */: {
        const lo = u32[RUN_EXIT.mmioPhysAddr >>> 2]!;
        const hi = u32[(RUN_EXIT.mmioPhysAddr >>> 2) + 1]!;
        const len = Math.min(u32[RUN_EXIT.mmioLen >>> 2]!, 8);
        const e = this.#u8[RUN_EXIT.mmioIsWrite] !== 0 ? this.#mmioWrite : this.#mmioRead;
        e.address = hi * 0x100000000 + lo;
        e.len = len;
        e.data = this.#mmioViews[len]!;
        return e;
      }
      case ExitReason.HLT:
        return HLT;
      case ExitReason.SHUTDOWN:
        return SHUTDOWN;
      case ExitReason.INTR:
        return INTR;
      case ExitReason.IRQ_WINDOW_OPEN:
        return IRQ_WINDOW;
      case ExitReason.DIRTY_RING_FULL:
        return DIRTY_RING_FULL;
      case ExitReason.FAIL_ENTRY:
        return { kind: "FailEntry", hardwareEntryFailureReason: this.#u64(RUN_EXIT.failEntryReason), cpu: u32[RUN_EXIT.failEntryCpu >>> 2]! };
      case ExitReason.EXCEPTION:
        return { kind: "Exception", exception: u32[RUN_EXIT.exException >>> 2]!, errorCode: u32[RUN_EXIT.exErrorCode >>> 2]! };
      case ExitReason.INTERNAL_ERROR: {
        const ndata = Math.min(u32[RUN_EXIT.internalNdata >>> 2]!, 16);
        return { kind: "InternalError", suberror: u32[RUN_EXIT.internalSuberror >>> 2]!, data: this.#u64s(RUN_EXIT.internalData, ndata) };
      }
      case ExitReason.SYSTEM_EVENT: {
        const ndata = Math.min(u32[RUN_EXIT.systemEventNdata >>> 2]!, 16);
        return { kind: "SystemEvent", type: u32[RUN_EXIT.systemEventType >>> 2]!, data: this.#u64s(RUN_EXIT.systemEventData, ndata) };
      }
      case ExitReason.IOAPIC_EOI:
        return { kind: "IoapicEoi", vector: this.#u8[RUN_EXIT.eoiVector]! };
      case ExitReason.HYPERCALL:
        return {
          kind: "Hypercall",
          nr: this.#u64(RUN_EXIT.hypercallNr),
          args: this.#u64s(RUN_EXIT.hypercallArgs, 6),
          flags: this.#u64(RUN_EXIT.hypercallFlags),
        };
      case ExitReason.X86_RDMSR:
      case ExitReason.X86_WRMSR:
        return {
          kind: reason === ExitReason.X86_RDMSR ? "X86Rdmsr" : "X86Wrmsr",
          index: u32[RUN_EXIT.msrIndex >>> 2]!,
          reason: u32[RUN_EXIT.msrReason >>> 2]!,
          data: reason === ExitReason.X86_RDMSR ? 0n : this.#u64(RUN_EXIT.msrData),
        };
      case ExitReason.DEBUG:
        return {
          kind: "Debug",
          exception: u32[RUN_EXIT.debugException >>> 2]!,
          pc: this.#u64(RUN_EXIT.debugPc),
          dr6: this.#u64(RUN_EXIT.debugDr6),
          dr7: this.#u64(RUN_EXIT.debugDr7),
        };
      case ExitReason.MEMORY_FAULT:
        return {
          kind: "MemoryFault",
          flags: this.#u64(RUN_EXIT.memoryFaultFlags),
          // Numbers, like every guest-physical address in this package (below 2^52).
          gpa: Number(this.#u64(RUN_EXIT.memoryFaultGpa)),
          size: Number(this.#u64(RUN_EXIT.memoryFaultSize)),
        };
      case 0 /* KVM_EXIT_UNKNOWN */:
        return { kind: "Unknown", reason, hardwareExitReason: this.#u64(RUN_EXIT.hwExitReason) };
      default:
        // Not decoded: the union member hw.hardware_exit_reason means nothing here.
        return { kind: "Unknown", reason };
    }
  }

  /** Writes the answer to an X86Rdmsr/X86Wrmsr exit: msr.error and msr.data. */
  setMsrResult(data: bigint, error: boolean): void {
    this.#u8[RUN_EXIT.msrError] = error ? 1 : 0;
    const v = BigInt.asUintN(64, data);
    this.#u32[RUN_EXIT.msrData >>> 2] = Number(v & 0xffffffffn);
    this.#u32[(RUN_EXIT.msrData >>> 2) + 1] = Number(v >> 32n);
  }

  /** Writes hypercall.ret. */
  setHypercallRet(ret: bigint): void {
    const v = BigInt.asUintN(64, ret);
    this.#u32[RUN_EXIT.hypercallRet >>> 2] = Number(v & 0xffffffffn);
    this.#u32[(RUN_EXIT.hypercallRet >>> 2) + 1] = Number(v >> 32n);
  }
}
