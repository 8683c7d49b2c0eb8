import { fileURLToPath } from "node:url";
import type { VmmLauncher } from "@ts-vmm/test-guests";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

/**
 * The harness seam (VmmLauncher) for the reference VMM, as a child process
 * running `ts-vmm run`. It provides no virtio devices yet.
 */
export const oursLauncher: VmmLauncher = {
  name: "ours",
  provides: [],
  plan(spec) {
    const args = [CLI, "run", "--kernel", spec.kernel, "--cmdline", spec.cmdline, "--mem", String(spec.memMiB)];
    if (spec.initrd !== undefined) args.push("--initrd", spec.initrd);
    // Only when asked: the CLI has no --vcpus flag yet (issue 10 adds it), and 1 is its default.
    if (spec.vcpus !== 1) args.push("--vcpus", String(spec.vcpus));
    args.push(...spec.extraArgs);
    return {
      kind: "process",
      file: process.execPath,
      args,
      // Odd statuses are (value << 1) | 1 from the debug-exit port; 0, 2, 70 and 124 are the VMM's own.
      guestExitValue: (code) => (code !== null && (code & 1) === 1 ? code >> 1 : null),
    };
  },
};

/** The name `pnpm bench:peer` looks for (TS_VMM_OURS_LAUNCHER points at this module). */
export const launcher: VmmLauncher = oursLauncher;
