import type { MsrEntry } from "@ts-vmm/kvm-ioctls";

/**
 * Most vCPUs of one VM (KVM may allow fewer: KVM_CAP_MAX_VCPUS is checked at
 * create). Up to 254 with either irqchip (APIC ids below the xAPIC broadcast
 * id); above that the split irqchip with KVM_CAP_X2APIC_API and x2APIC in the
 * CPU model (MADT x2APIC entries, 15-bit destinations through
 * KVM_FEATURE_MSI_EXT_DEST_ID).
 */
export const MAX_VCPUS = 1024;
/** Most vCPUs without x2APIC ids: APIC ids 0..253 (255 is the xAPIC broadcast id). */
export const MAX_XAPIC_VCPUS = 254;
/** ISA IRQ of COM1 (the DSDT's PNP0501 says so too). */
export const COM1_IRQ = 4;
/** ISA IRQ of the i8042 keyboard port. */
export const KBD_IRQ = 1;
/** Where KVM puts the real-mode TSS and identity map on Intel hosts: just below 4 GiB, inside our MMIO hole. */
export const TSS_ADDR = 0xfffb_d000;

const MSR_IA32_TSC = 0x10;
const MSR_IA32_SYSENTER_CS = 0x174, MSR_IA32_SYSENTER_ESP = 0x175, MSR_IA32_SYSENTER_EIP = 0x176;
const MSR_IA32_MISC_ENABLE = 0x1a0;
const MSR_MTRR_DEF_TYPE = 0x2ff;
const MSR_STAR = 0xc000_0081, MSR_LSTAR = 0xc000_0082, MSR_CSTAR = 0xc000_0083, MSR_SYSCALL_MASK = 0xc000_0084;
const MSR_KERNEL_GS_BASE = 0xc000_0102;
/** IA32_MISC_ENABLE bit 0: fast string operations. */
const MISC_ENABLE_FAST_STRING = 1n;
/** IA32_MTRR_DEF_TYPE: MTRRs enabled (bit 11), default memory type write-back (6). */
const MTRR_ENABLE_WB = (1n << 11n) | 6n;

/**
 * MSRs every vCPU starts with, as Linux expects of a PC after firmware: the
 * SYSCALL/SYSENTER MSRs cleared, TSC 0 (KVM synchronizes the vCPUs' TSCs
 * written within a second of each other), fast strings on, and MTRRs enabled
 * with write-back as the default type (otherwise Linux reports "MTRRs
 * disabled" and maps all memory uncached under PAT's MTRR emulation).
 */
export const BOOT_MSRS: readonly MsrEntry[] = Object.freeze([
  { index: MSR_IA32_SYSENTER_CS, data: 0n },
  { index: MSR_IA32_SYSENTER_ESP, data: 0n },
  { index: MSR_IA32_SYSENTER_EIP, data: 0n },
  { index: MSR_STAR, data: 0n },
  { index: MSR_CSTAR, data: 0n },
  { index: MSR_KERNEL_GS_BASE, data: 0n },
  { index: MSR_SYSCALL_MASK, data: 0n },
  { index: MSR_LSTAR, data: 0n },
  { index: MSR_IA32_TSC, data: 0n },
  { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
  { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE_WB },
].map((e) => Object.freeze(e)));
