// The host CPU's own CPUID, through the CPUID instruction (the addon's cpuid()).
import { KvmError, checkUint } from "./errors.js";
import { native } from "./native.js";

/** The four output registers of one CPUID query. */
export interface CpuidRegisters {
  /** EAX. */
  readonly eax: number;
  /** EBX. */
  readonly ebx: number;
  /** ECX. */
  readonly ecx: number;
  /** EDX. */
  readonly edx: number;
}

/**
 * Runs the CPUID instruction with EAX = `leaf` and ECX = `subleaf` on the
 * calling thread's CPU and returns its output. This is the host's view, not
 * KVM's (compare {@link Kvm.getSupportedCpuid}); no privileges are needed.
 * Fields that differ between CPUs (the APIC ids in leaves 1, 0xB, 0x1F) are
 * those of whichever CPU the thread runs on.
 * @throws {@link KvmError} `InvalidArgument`/`OutOfRange` for a leaf or subleaf outside 32 bits; `Unsupported` if the addon lacks cpuid (a replaced binding).
 */
export function hostCpuid(leaf: number, subleaf = 0): CpuidRegisters {
  checkUint(leaf, "leaf");
  checkUint(subleaf, "subleaf");
  const n = native();
  if (!n.cpuid) throw new KvmError("Unsupported", "the native binding has no cpuid()");
  const out = new Uint32Array(4);
  n.cpuid(leaf, subleaf, out);
  return { eax: out[0]!, ebx: out[1]!, ecx: out[2]!, edx: out[3]! };
}
