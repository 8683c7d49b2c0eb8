// struct kvm_nested_state (arch/x86/include/uapi/asm/kvm.h): a 128-byte header
// (flags, format, size, then a VMX or SVM header padded to 120 bytes) followed by
// `size - 128` bytes of format-specific data (vmcs12/shadow vmcs12, or the vmcb12).
import { view } from "./bytes.js";

/** Offsets in struct kvm_nested_state; `header` is sizeof(struct kvm_nested_state). */
export const NESTED_STATE = { header: 128, flags: 0, format: 2, size: 4, hdr: 8, data: 128 } as const;

/** The decoded header fields of a nested-state blob. */
export interface NestedStateHeader {
  /** KVM_STATE_NESTED_* flags (GUEST_MODE, RUN_PENDING, EVMCS, MTF_PENDING, GIF_SET). */
  readonly flags: number;
  /** KVM_STATE_NESTED_FORMAT_VMX (0) or KVM_STATE_NESTED_FORMAT_SVM (1). */
  readonly format: number;
  /** Bytes of the whole state, header included (at least 128). */
  readonly size: number;
}

/** Reads flags, format and size from the first 8 bytes (the caller checked the length). @internal */
export function decodeNestedStateHeader(buf: Uint8Array): NestedStateHeader {
  const dv = view(buf);
  return { flags: dv.getUint16(NESTED_STATE.flags, true), format: dv.getUint16(NESTED_STATE.format, true), size: dv.getUint32(NESTED_STATE.size, true) };
}
