// What the nested tier's Linux tests (linux-boot, linux-devices, linux-snapshot) share.
import { fileURLToPath } from "node:url";
import { guestHasL1State, guestRanStaleText, type NestedRun } from "@ts-vmm/test-guests";

/** The built package, copied into L1 (dist/ and the addon). */
export const PACKAGE_DIR = fileURLToPath(new URL("..", import.meta.url));

/** The full boot's command line: the busybox /init, panic reboots (and so ends the VMM). */
export const FULL_CMDLINE = "console=ttyS0 rdinit=/init panic=-1";

/**
 * The nested tier's boots run quiet, as the QEMU reference does: QEMU 7.2's TCG
 * SVM sometimes hands an L2 vCPU L1's state (see test-guests' guestHasL1State)
 * or corrupts it so that the guest triple-faults at a random point, and the
 * chance grows with the VM exits; the kernel's ~15 KB of boot messages cost
 * ~30 000 port exits on a 16550A. Measured 2026-12-02 (Intel host, 1 vCPU,
 * verbose): 3 of 22 boots failed so (two triple faults mid-line, one vCPU at
 * an L1 address), with L1's kvm_amd at vgif=0 vls=0 too; quiet: 0 of 10. The
 * serial path at volume is tested on the micro-guest (audit.test.ts: the serial backlog).
 */
export const QUIET_CMDLINE = `${FULL_CMDLINE} quiet`;

/**
 * Our guests in the nested tier get no XSAVE: QEMU 7.2's TCG does not intercept XSETBV for
 * L1's KVM, so KVM never learns the guest's XCR0 and reloads its reset value on every entry.
 * A guest using XSAVE then warns "XSAVE consistency problem" and, seen here, triple-faults
 * a little later (1-vCPU boot, 2026-12-02) or, with the baseline template, never reaches
 * /init. QEMU's reference guest (microvm's default qemu64 model) has no XSAVE either. On a
 * host with VMX/SVM the full-boot test exposes everything the template allows.
 */
export const NESTED_CPU_ARGS: readonly string[] = ["--cpu-features", "-xsave"];

/**
 * Why a nested run says nothing about the VMM under test, or null: an L1
 * problem (its kernel's own oops included), one of our VMMs stopped with a
 * vCPU inside L1's modules (the emulator handed it L1's state), or a guest
 * kernel that trapped on an int3 its memory no longer holds (a stale TCG
 * translation after text patching). The only failures the nested tests retry.
 */
export function nestedEnvironmentProblem(run: NestedRun): string | null {
  return run.problem
    ?? run.guests.flatMap((g) => [g, ...(g.snapshotted ? [g.snapshotted] : [])]).map((g) => guestHasL1State(run, g) ?? guestRanStaleText(g)).find((why) => why !== null)
    ?? null;
}
