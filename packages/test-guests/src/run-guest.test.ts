import { existsSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { TestGuestsError } from "./error.js";
import type { LaunchSpec, RunningVm, VmmLauncher } from "./launcher.js";
import { runGuest } from "./run-guest.js";

/** A "VMM" that is a real shell process: exercises spawning, serial capture, kill and exit mapping. */
function shellVmm(script: string): VmmLauncher {
  return {
    name: "sh",
    provides: ["blk", "rng"],
    plan: () => ({
      kind: "process",
      file: "sh",
      args: ["-c", script],
      guestExitValue: (code) => code,
    }),
  };
}

/** Running (a zombie waiting for its reaper counts as dead). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

describe("runGuest with a process launcher", () => {
  it("captures serial lines, parses results and maps the exit value", async () => {
    const r = await runGuest({ vmm: shellVmm("printf 'boot\\nPASS a\\nRESULT k=v\\n'; echo oops >&2; exit 7"), kernel: "/x" });
    expect(r.exitCode).toBe(7);
    expect(r.vmmExit).toEqual({ code: 7, signal: null });
    expect(r.lines.map((l) => l.text)).toEqual(["boot", "PASS a", "RESULT k=v"]);
    expect(r.results.passed).toEqual(["a"]);
    expect(r.results.values["k"]).toBe("v");
    expect(r.vmmLog).toBe("oops\n");
    expect(r.firstSerialByteMs).not.toBeNull();
    expect(r.timedOut).toBe(false);
  });

  it("kills the whole process group on timeout, grandchildren included", async () => {
    const pidFile = join(tmpdir(), `ts-vmm-tg-${process.pid}-${Date.now()}.pid`);
    try {
      const r = await runGuest({
        vmm: shellVmm(`sleep 30 & echo $! > ${pidFile}; echo started; wait`),
        kernel: "/x",
        timeoutMs: 400,
      });
      expect(r.timedOut).toBe(true);
      expect(r.exitCode).toBeNull();
      expect(r.vmmExit?.signal).toBe("SIGKILL");
      const grandchild = Number(readFileSync(pidFile, "utf8"));
      await new Promise((res) => setTimeout(res, 100));
      expect(alive(grandchild)).toBe(false);
    } finally {
      rmSync(pidFile, { force: true });
    }
  });

  it("stops as soon as the serial output matches stopOnSerial", async () => {
    const r = await runGuest({ vmm: shellVmm("echo early; echo 'x87 FPU marker'; sleep 30"), kernel: "/x", stopOnSerial: "FPU marker", timeoutMs: 20_000 });
    expect(r.stoppedOnSerial).toBe(true);
    expect(r.timedOut).toBe(false);
    expect(r.wallMs).toBeLessThan(10_000);
  });

  it("reports a VMM binary that does not exist as SpawnFailed", async () => {
    const vmm: VmmLauncher = {
      name: "missing",
      provides: [],
      plan: () => ({ kind: "process", file: "/nonexistent/ts-vmm-vmm", args: [], guestExitValue: () => null }),
    };
    await expect(runGuest({ vmm, kernel: "/x" })).rejects.toMatchObject({ code: "SpawnFailed" });
  });
});

describe("runGuest argument checks (before anything starts)", () => {
  it("rejects a device the VMM does not provide", async () => {
    const err = await runGuest({ vmm: shellVmm("exit 0"), kernel: "/x", devices: [{ kind: "rtc" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TestGuestsError);
    expect((err as TestGuestsError).code).toBe("Unsupported");
  });

  it.each([
    { memMiB: 0 },
    { memMiB: 1.5 },
    { vcpus: 0 },
    { timeoutMs: -1 },
  ])("rejects %o", async (o) => {
    await expect(runGuest({ vmm: shellVmm("exit 0"), kernel: "/x", ...o })).rejects.toMatchObject({ code: "InvalidArgument" });
  });
});

describe("runGuest with an in-process launcher (the seam our VMM can implement)", () => {
  it("hands the console's echo socket to the VMM, streams serial and returns the exit value", async () => {
    let seen: LaunchSpec | undefined;
    const vmm: VmmLauncher = {
      name: "in-process",
      provides: ["console"],
      plan(spec) {
        seen = spec;
        return {
          kind: "in-process",
          start(io) {
            const dev = spec.devices[0];
            if (dev?.kind !== "console") throw new Error("console expected");
            const exited = new Promise<{ guestExitValue: number | null }>((res) => {
              const s = connect(dev.socketPath, () => s.write("ping"));
              s.on("data", (b) => {
                io.serial(Buffer.from(`PASS echo-${b.toString()}\nRESULT exit=0\n`));
                s.destroy();
                res({ guestExitValue: 0 });
              });
            });
            return { exited, stop: async () => {} };
          },
        };
      },
    };
    const r = await runGuest({ vmm, kernel: "guest.elf", cmdline: "mode=selftest", devices: [{ kind: "console" }] });
    expect(r.exitCode).toBe(0);
    expect(r.results.passed).toEqual(["echo-ping"]);
    expect(r.vmmExit).toBeNull();
    expect(seen?.kernel).toMatch(/^\/.*guest\.elf$/);
    expect(seen?.memMiB).toBe(64);
    const dev = seen?.devices[0];
    expect(dev?.kind === "console" && existsSync(dev.socketPath)).toBe(false); // removed after the run
  });

  it("calls stop() on timeout and reports it", async () => {
    let stops = 0;
    const vmm: VmmLauncher = {
      name: "hang",
      provides: [],
      plan: () => ({
        kind: "in-process",
        start(): RunningVm {
          let done: (v: { guestExitValue: number | null }) => void = () => {};
          const exited = new Promise<{ guestExitValue: number | null }>((res) => (done = res));
          return {
            exited,
            async stop() {
              stops++;
              done({ guestExitValue: null });
            },
          };
        },
      }),
    };
    const r = await runGuest({ vmm, kernel: "/x", timeoutMs: 200 });
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBeNull();
    expect(stops).toBeGreaterThanOrEqual(1);
  });
});
