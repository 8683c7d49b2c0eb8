// struct kvm_regs (arch/x86/include/uapi/asm/kvm.h): 18 x __u64.
import { setU64, u64, view } from "./bytes.js";

/** General-purpose registers (struct kvm_regs). All values are 64-bit bigints. */
export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** sizeof(struct kvm_regs). */
export const KVM_REGS_SIZE = 144;
/** Field order of struct kvm_regs; field i is at offset 8 * i. */
export const REGS_FIELDS = [
  "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
] as const satisfies readonly (keyof Regs)[];

/** Decodes struct kvm_regs. */
export function decodeRegs(buf: Uint8Array): Regs {
  const dv = view(buf);
  const r = {} as Regs;
  REGS_FIELDS.forEach((f, i) => { r[f] = u64(dv, i * 8); });
  return r;
}

/** Encodes struct kvm_regs into a new buffer. */
export function encodeRegs(r: Regs): Uint8Array {
  const buf = new Uint8Array(KVM_REGS_SIZE);
  const dv = view(buf);
  REGS_FIELDS.forEach((f, i) => { setU64(dv, i * 8, r[f]); });
  return buf;
}
