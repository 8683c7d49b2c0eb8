import { accessSync, constants, existsSync } from "node:fs";
import { delimiter, join } from "node:path";

/** What a group of tests needs from the machine. */
export interface Needs {
  /** Read-write access to /dev/kvm. */
  readonly kvm?: boolean;
  /** Programs that must be on PATH (for example `qemu-system-x86_64`, `iasl`). */
  readonly tools?: readonly string[];
  /** Root privileges (network namespaces, tap devices). */
  readonly root?: boolean;
  /**
   * Features of the host's kernel (a KVM capability, say) that no set-up step can install.
   * Where one is absent the group is skipped with the reason, also under CI: the tests say
   * what they need and where they run, and the run counts them as skipped, not passed.
   */
  readonly hostFeatures?: readonly HostFeature[];
}

/** A feature of the host's kernel that a test group needs ({@link Needs.hostFeatures}). */
export interface HostFeature {
  /** What it is and where it exists, e.g. "KVM_CAP_GUEST_MEMFD (Linux 6.8+ KVM built with guest_memfd)". */
  readonly name: string;
  /** Whether this host has it. A throw is not an answer: the group fails under CI, else skips. */
  readonly present: () => boolean;
}

/** The outcome of checking {@link Needs} against this machine. */
export type GateResult =
  | { readonly run: true }
  | { readonly run: false; readonly reason: string; readonly mustFail: boolean };

function onPath(tool: string): boolean {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, tool))) return true;
  }
  return false;
}

/** Where {@link checkNeeds} looks for KVM (a seam for tests). */
export const KVM_DEVICE = "/dev/kvm";

/**
 * Checks what a test group needs. Under CI (`CI=true`) anything missing is a
 * failure, never a skip: a missing tool, a /dev/kvm without read-write
 * access, and a missing /dev/kvm too (CI runs on KVM hosts; a runner without
 * it must turn the run red, not skip its KVM tests into a green one). An absent
 * host feature ({@link Needs.hostFeatures}) skips, also under CI, once everything
 * else is there.
 * `kvmDevice` is the device path to check (default {@link KVM_DEVICE}).
 */
export function checkNeeds(needs: Needs, kvmDevice: string = KVM_DEVICE): GateResult {
  const ci = process.env["CI"] === "true";
  const missing: string[] = [];
  if (needs.kvm) {
    if (!existsSync(kvmDevice)) {
      missing.push(`${kvmDevice} (it does not exist on this machine)`);
    } else {
      try {
        accessSync(kvmDevice, constants.R_OK | constants.W_OK);
      } catch {
        missing.push(`read-write access to ${kvmDevice} (run as root or join the kvm group)`);
      }
    }
  }
  if (needs.root && process.getuid?.() !== 0) missing.push("root privileges");
  for (const tool of needs.tools ?? []) {
    if (!onPath(tool)) missing.push(`${tool} on PATH (scripts/setup.sh installs it)`);
  }
  if (missing.length > 0) return { run: false, reason: `needs ${missing.join(", ")}`, mustFail: ci };
  // A probe that throws has not said the feature is absent: under CI that fails, so a broken
  // probe (or a regression in what it calls) cannot turn the group into a skip.
  const absent: HostFeature[] = [];
  for (const f of needs.hostFeatures ?? []) {
    let present: boolean;
    try {
      present = f.present();
    } catch (e) {
      return { run: false, reason: `the probe for ${f.name} failed: ${e instanceof Error ? e.message : String(e)}`, mustFail: ci };
    }
    if (!present) absent.push(f);
  }
  if (absent.length === 0) return { run: true };
  return { run: false, reason: `needs ${absent.map((f) => f.name).join(", ")}, which this host's kernel does not offer (no set-up step can add it)`, mustFail: false };
}
