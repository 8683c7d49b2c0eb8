// ONE_REG ids for x86 (arch/x86/include/uapi/asm/kvm.h, Linux 6.18:
// KVM_X86_REG_TYPE_MSR = 2, KVM_X86_REG_TYPE_KVM = 3, KVM_REG_GUEST_SSP = 0;
// id = KVM_REG_X86 | type << 32 | size | index).
import { checkUint } from "./errors.js";
import {
  KVM_REG_GUEST_SSP,
  KVM_REG_SIZE_MASK,
  KVM_REG_SIZE_SHIFT,
  KVM_REG_SIZE_U64,
  KVM_REG_X86,
  KVM_X86_REG_TYPE_KVM,
  KVM_X86_REG_TYPE_MSR,
} from "./generated/kvm-constants.js";

/**
 * The KVM_GET/SET_ONE_REG id of MSR `index` (KVM_X86_REG_MSR, Linux 6.18).
 * @throws {@link KvmError} `OutOfRange` for an index above 32 bits.
 */
export function x86MsrRegId(index: number): bigint {
  checkUint(index, "MSR index");
  return KVM_REG_X86 | (BigInt(KVM_X86_REG_TYPE_MSR) << 32n) | KVM_REG_SIZE_U64 | BigInt(index);
}

/**
 * The ONE_REG id of KVM-defined register `index` (KVM_X86_REG_KVM). Only
 * KVM_REG_GUEST_SSP (0) has a size; other indices get size 0 as in the header.
 * @throws {@link KvmError} `OutOfRange`
 */
export function x86KvmRegId(index: number): bigint {
  checkUint(index, "register index");
  const size = index === KVM_REG_GUEST_SSP ? KVM_REG_SIZE_U64 : 0n;
  return KVM_REG_X86 | (BigInt(KVM_X86_REG_TYPE_KVM) << 32n) | size | BigInt(index);
}

/** ONE_REG id of the guest shadow stack pointer (0x2030000300000000). */
export const GUEST_SSP_REG_ID: bigint = x86KvmRegId(KVM_REG_GUEST_SSP);

/** Bytes of a ONE_REG register: 1 << size field. */
export function oneRegSize(id: bigint): number {
  return 1 << Number((id & KVM_REG_SIZE_MASK) >> BigInt(KVM_REG_SIZE_SHIFT));
}
