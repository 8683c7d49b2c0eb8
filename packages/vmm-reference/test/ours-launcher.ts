import { fileURLToPath } from "node:url";
import type { ResolvedDevice, VmmLauncher } from "@ts-vmm/test-guests";

/** The `ts-vmm` executable users run (package.json `bin`): the shell launcher src/ts-vmm.sh, built to dist/ts-vmm. */
const BIN = fileURLToPath(new URL("../dist/ts-vmm", import.meta.url));
/** The CommonJS entry the launcher runs on `node`: what an L1 image can run (it copies ELF executables, not a script and the node it finds on PATH). */
const CLI = fileURLToPath(new URL("../dist/bin.cjs", import.meta.url));

/** Odd statuses are (value << 1) | 1 from the debug-exit port; 0, 2, 4, 70, 124 and 130 are the VMM's own. */
const guestExitValue = (code: number | null): number | null => (code !== null && (code & 1) === 1 ? code >> 1 : null);

/** How a plan starts the VMM: the `ts-vmm` executable, or node on dist/bin.cjs. */
type Start = (args: readonly string[]) => { file: string; args: string[] };
const viaBin: Start = (args) => ({ file: BIN, args: [...args] });
const viaNode: Start = (args) => ({ file: process.execPath, args: [CLI, ...args] });

/** The `ts-vmm run` flags for one device the harness prepared. */
function deviceFlags(d: ResolvedDevice): string[] {
  switch (d.kind) {
    case "blk":
      return ["--disk", d.readOnly ? `${d.path},ro` : d.path];
    case "rng":
      return ["--rng"];
    case "console":
      return ["--console-socket", d.socketPath];
    case "net":
      // No user-mode network here: without a tap name the VMM creates a new tap (the kernel
      // numbers it), which has no peer, so nothing answers the guest's ARP as QEMU's does.
      return ["--net", `tap=${d.tap ?? "tsvmm%d"}`];
    case "balloon":
      // The balloon's size at start (the nested device test's target), when the caller gave one.
      return d.amountMiB === undefined ? ["--balloon"] : ["--balloon", `amount_mib=${d.amountMiB}`];
    case "rtc":
      return ["--rtc"];
    case "vsock":
      return ["--vsock", `cid=${d.cid},uds=${d.udsPath}`];
    default:
      throw new Error(`the reference VMM has no ${(d as { kind: string }).kind} device`);
  }
}

/**
 * A harness seam (VmmLauncher) for the reference VMM, as a child process
 * running `ts-vmm run` (started by `start`), with virtio-blk, virtio-rng, virtio-console, virtio-balloon, virtio-rtc and virtio-vsock (and
 * virtio-net on a named tap, through wrappers such as test/ns-launcher.ts that add "net" to `provides`).
 */
function makeLauncher(start: Start): VmmLauncher {
  return {
    name: "ours",
    // "net" is mapped (deviceFlags) but not listed: harnesses that attach every provided kind
    // (the nested full boot) would give ours a tap with no peer. Tests that prepare a tap add it:
    // inNamespace (ns-launcher.ts), and the nested device test (linux-devices.test.ts), whose L1
    // creates the tap.
    provides: ["blk", "rng", "console", "balloon", "rtc", "vsock"],
    plan(spec) {
      const args = ["run", "--kernel", spec.kernel, "--cmdline", spec.cmdline, "--mem", String(spec.memMiB)];
      if (spec.initrd !== undefined) args.push("--initrd", spec.initrd);
      args.push("--vcpus", String(spec.vcpus));
      for (const d of spec.devices) args.push(...deviceFlags(d));
      args.push(...spec.extraArgs);
      return {
        // 7 bits of the guest's value survive in (value << 1) | 1. Status 1 is also Node's own
        // for an uncaught exception or a missing script: the harness counts a guest exit only
        // with the guest's RESULT exit= line (GuestRun.guestExit).
        exitValueBits: 7,
        kind: "process",
        ...start(args),
        guestExitValue,
      };
    },
    // `--snapshot-on-signal SIG:DIR` writes DIR/vm.snap and DIR/vm.mem; `run --restore` continues from them.
    snapshot: {
      snapshotArgs: ({ dir, signal, apiSock }) => [
        "--snapshot-on-signal", `${signal}:${dir}`,
        ...(apiSock !== undefined ? ["--api-sock", apiSock] : []),
      ],
      snapshotDoneText: "ts-vmm: snapshot written to",
      snapshotFailedText: "ts-vmm: snapshot failed",
      restorePlan: ({ dir, extraArgs }) => ({
        kind: "process",
        ...start(["run", "--restore", `${dir}/vm.snap,mem=${dir}/vm.mem`, ...extraArgs]),
        exitValueBits: 7,
        guestExitValue,
      }),
    },
  };
}

/**
 * The harness seam (VmmLauncher) for the reference VMM as users run it: the `ts-vmm`
 * executable (dist/ts-vmm, the package's `bin`), as a child process.
 */
export const oursLauncher: VmmLauncher = makeLauncher(viaBin);

/**
 * The same VMM started as `node dist/bin.cjs`: for the nested tier, whose L1 image copies the
 * plan's ELF executable and its libraries (a shell script would find no node on L1's PATH).
 */
export const oursNodeLauncher: VmmLauncher = makeLauncher(viaNode);

/** The name `pnpm bench:peer` looks for (TS_VMM_OURS_LAUNCHER=<this module>). */
export const launcher: VmmLauncher = oursLauncher;
