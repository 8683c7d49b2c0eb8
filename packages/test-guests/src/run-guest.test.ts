import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "node:net";
import { performance } from "node:perf_hooks";
import { describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { containment } from "./contain.js";
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

/** A VMM that decodes its status the way QEMU's isa-debug-exit and ours do: odd status = (value << 1) | 1. */
function debugExitVmm(file: string, args: string[]): VmmLauncher {
  return {
    name: "debug-exit",
    provides: [],
    plan: () => ({
      kind: "process",
      file,
      args,
      exitValueBits: 7,
      guestExitValue: (code) => (code !== null && (code & 1) === 1 ? code >> 1 : null),
    }),
  };
}

let tokens = 0;
/** A `sleep` whose command line is unique to this test run, so it can be found in /proc from any pid namespace. */
function uniqueSleep(): string {
  return `30.${process.pid}${String(++tokens).padStart(3, "0")}`;
}
/** Host pids of live (non-zombie) processes running `sleep <arg>`. */
function sleepers(arg: string): number[] {
  const found: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "latin1") === `sleep\0${arg}\0` && alive(Number(d))) found.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
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
    const r = await runGuest({ vmm: shellVmm("printf 'boot\\nPASS a\\nRESULT k=v\\nRESULT exit=7\\n'; echo oops >&2; exit 7"), kernel: "/x" });
    expect(r.guestExit).toBe(7);
    expect(r.exitProblem).toBeNull();
    expect(r.exitCode).toBe(7);
    expect(r.vmmExit).toEqual({ code: 7, signal: null });
    expect(r.harnessProblems).toEqual([]);
    expect(r.lines.map((l) => l.text)).toEqual(["boot", "PASS a", "RESULT k=v", "RESULT exit=7"]);
    expect(r.results.passed).toEqual(["a"]);
    expect(r.results.values["k"]).toBe("v");
    expect(r.vmmLog).toBe("oops\n");
    expect(r.firstSerialByteMs).not.toBeNull();
    expect(r.timedOut).toBe(false);
  });

  it("kills the VMM and its grandchildren on timeout", async () => {
    const arg = uniqueSleep();
    const r = await runGuest({ vmm: shellVmm(`sleep ${arg} & echo started; wait`), kernel: "/x", timeoutMs: 400 });
    expect(r.timedOut).toBe(true);
    expect(r.guestExit).toBeNull();
    expect(r.vmmExit?.signal).toBe("SIGKILL");
    expect(sleepers(arg)).toEqual([]);
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

  it("gives vsock a Unix socket path: a temporary one (its directory removed after the run) or the caller's, and vsock_cid= on the command line", async () => {
    const seen: LaunchSpec[] = [];
    const vmm: VmmLauncher = {
      name: "in-process",
      provides: ["vsock"],
      plan(spec) {
        seen.push(spec);
        return {
          kind: "in-process",
          start(io) {
            io.serial(Buffer.from("RESULT exit=0\n"));
            return { exited: Promise.resolve({ guestExitValue: 0 }), stop: async () => {} };
          },
        };
      },
    };
    await runGuest({ vmm, kernel: "guest.elf", devices: [{ kind: "vsock", cid: 5 }] });
    const own = join(mkdtempSync(join(tmpdir(), "vsock-spec-")), "v.sock");
    await runGuest({ vmm, kernel: "guest.elf", devices: [{ kind: "vsock", cid: 6, udsPath: own }] });
    const [a, b] = seen.map((s) => s.devices[0]);
    expect(a?.kind === "vsock" && a.udsPath).toMatch(/^\/.*\/vsock\.sock$/);
    if (a?.kind === "vsock") expect(existsSync(join(a.udsPath, ".."))).toBe(false);
    expect(b).toEqual({ kind: "vsock", cid: 6, udsPath: own });
    expect(seen[0]?.cmdline).toBe("vsock_cid=5");
    rmSync(join(own, ".."), { recursive: true, force: true });
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

describe("the exit verdict needs the guest's own RESULT exit= line", () => {
  it("a VMM that dies with status 1 (Node throwing) is not 'the guest wrote 0'", async () => {
    const r = await runGuest({ vmm: debugExitVmm(process.execPath, ["-e", "throw new Error('VMM bug')"]), kernel: "/x" });
    expect(r.vmmExit).toEqual({ code: 1, signal: null });
    expect(r.vmmExitValue).toBe(0); // what the status alone decodes to
    expect(r.guestExit).toBeNull();
    expect(r.exitCode).toBeNull();
    expect(r.exitProblem).toMatch(/no RESULT exit= line/);
  });

  it("a missing VMM script (node with a missing dist/cli.js) is not a guest pass", async () => {
    const r = await runGuest({ vmm: debugExitVmm(process.execPath, ["/nonexistent/dist/cli.js"]), kernel: "/x" });
    expect(r.vmmExit?.code).toBe(1);
    expect(r.guestExit).toBeNull();
  });

  it("status 1 after the guest printed a different value is rejected as a disagreement", async () => {
    const r = await runGuest({ vmm: debugExitVmm("sh", ["-c", "echo 'RESULT exit=3'; exit 1"]), kernel: "/x" });
    expect(r.vmmExitValue).toBe(0);
    expect(r.guestExit).toBeNull();
    expect(r.exitProblem).toMatch(/RESULT exit=3, but the VMM reports guest value 0/);
  });

  it("agreement counts, with the value truncated to the status's bits (0x7f traps: status 255)", async () => {
    const ok = await runGuest({ vmm: debugExitVmm("sh", ["-c", "echo 'RESULT exit=0'; exit 1"]), kernel: "/x" });
    expect(ok.guestExit).toBe(0);
    const trap = await runGuest({ vmm: debugExitVmm("sh", ["-c", "echo 'RESULT exit=127'; exit 255"]), kernel: "/x" });
    expect(trap.guestExit).toBe(127);
  });

  it("the last RESULT exit= line counts, and a timeout is never a guest exit", async () => {
    const r = await runGuest({ vmm: debugExitVmm("sh", ["-c", "echo 'RESULT exit=0'; echo 'RESULT exit=1'; exit 1"]), kernel: "/x" });
    expect(r.guestExit).toBeNull();
    const t = await runGuest({ vmm: shellVmm("echo 'RESULT exit=0'; sleep 30"), kernel: "/x", timeoutMs: 300 });
    expect(t.timedOut).toBe(true);
    expect(t.guestExit).toBeNull();
    expect(t.exitProblem).toMatch(/timeout/);
  });

  describeWith({ tools: ["qemu-system-x86_64"] }, "QEMU", () => {
    it("QEMU with a missing kernel exits 1, which is not a guest exit 0", async () => {
      const r = await runGuest({ vmm: "qemu", kernel: "/nonexistent/ts-vmm-kernel.elf", timeoutMs: 20_000 });
      expect(r.vmmExit?.code, r.vmmLog).toBe(1);
      expect(r.vmmExitValue).toBe(0);
      expect(r.guestExit).toBeNull();
      expect(r.exitCode).toBeNull();
      expect(r.vmmLog).toMatch(/nonexistent/);
    }, 30_000);
  });
});

describeWith({ root: true, tools: ["setpriv", "unshare", "perl"] }, "no descendant of the VMM outlives runGuest (pid namespace)", () => {
  it("is the containment used on this machine", () => {
    expect(containment()).toBe("pid-namespace");
  });

  it("a leader that exits while a grandchild holds stdout and another detached itself: the run ends at once, both die", async () => {
    const held = uniqueSleep();
    const detached = uniqueSleep();
    const t0 = performance.now();
    const r = await runGuest({
      vmm: shellVmm(`sleep ${held} & setsid sleep ${detached} </dev/null >/dev/null 2>&1 & echo started; exit 0`),
      kernel: "/x",
      timeoutMs: 500,
    });
    const wall = performance.now() - t0;
    expect(r.serial).toBe("started\n");
    expect(wall).toBeLessThan(1500); // main: stdout stays open until the grandchild's sleep ends
    expect(r.vmmExit).toEqual({ code: 0, signal: null });
    expect(sleepers(held)).toEqual([]);
    expect(sleepers(detached)).toEqual([]); // main: this one outlived runGuest
  });

  it("a timeout takes about the timeout with a live leader, and kills grandchildren in other groups and sessions", async () => {
    const held = uniqueSleep();
    const detached = uniqueSleep();
    const t0 = performance.now();
    const r = await runGuest({
      vmm: shellVmm(`sleep ${held} & setsid sleep ${detached} </dev/null >/dev/null 2>&1 & echo started; wait`),
      kernel: "/x",
      timeoutMs: 500,
    });
    const wall = performance.now() - t0;
    expect(r.timedOut).toBe(true);
    expect(wall).toBeGreaterThanOrEqual(500);
    expect(wall).toBeLessThan(1500);
    expect(r.harnessProblems).toEqual([]);
    expect(sleepers(held)).toEqual([]);
    expect(sleepers(detached)).toEqual([]);
  });

  it("an error in the caller's onSerial ends the run and kills everything", async () => {
    const held = uniqueSleep();
    const err = await runGuest({
      vmm: shellVmm(`sleep ${held} & echo boom; wait`),
      kernel: "/x",
      timeoutMs: 20_000,
      onSerial: () => {
        throw new Error("caller bug");
      },
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe("caller bug");
    expect(sleepers(held)).toEqual([]);
  });

  it("a harness process killed with SIGKILL (no exit hook runs) leaves no VMM or grandchild behind", async () => {
    const vmmSleep = uniqueSleep();
    const grandchild = uniqueSleep();
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-harness-kill-"));
    try {
      const script = join(dir, "run.mts");
      const runGuestTs = fileURLToPath(new URL("./run-guest.ts", import.meta.url));
      writeFileSync(
        script,
        `import { runGuest } from ${JSON.stringify(runGuestTs)};\n` +
          `await runGuest({ vmm: { name: "sh", provides: [], plan: () => ({ kind: "process", file: "sh", args: ["-c", "setsid sleep ${grandchild} </dev/null >/dev/null 2>&1 & echo up; exec sleep ${vmmSleep}"], guestExitValue: () => null }) }, kernel: "/x", timeoutMs: 60000, onSerial: () => console.log("up") });\n`,
      );
      const child = spawn(process.execPath, ["--import", "tsx", script], { cwd: fileURLToPath(new URL("..", import.meta.url)), stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((res, rej) => {
        child.stdout.on("data", () => res());
        child.once("exit", (c) => rej(new Error(`harness child exited early (${String(c)})`)));
      });
      // Both sleeps run now; the harness dies without running any hook.
      for (let i = 0; i < 50 && (sleepers(vmmSleep).length === 0 || sleepers(grandchild).length === 0); i++) await new Promise((r) => setTimeout(r, 20));
      expect(sleepers(vmmSleep).length).toBe(1);
      expect(sleepers(grandchild).length).toBe(1);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      for (let i = 0; i < 50 && (sleepers(vmmSleep).length > 0 || sleepers(grandchild).length > 0); i++) await new Promise((r) => setTimeout(r, 20));
      expect(sleepers(vmmSleep)).toEqual([]);
      expect(sleepers(grandchild)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("a VMM killed by a signal is reported as that signal (not unshare's status 1)", async () => {
    const r = await runGuest({ vmm: debugExitVmm("sh", ["-c", "echo 'RESULT exit=0'; kill -SEGV $$"]), kernel: "/x" });
    expect(r.vmmExit).toEqual({ code: null, signal: "SIGSEGV" });
    expect(r.vmmExitValue).toBeNull();
    expect(r.guestExit).toBeNull();
  });
});

describe("in-process plans: start() and stop() are under the timeout", () => {
  const plan = (start: () => RunningVm | Promise<RunningVm>): VmmLauncher => ({
    name: "in-process",
    provides: [],
    plan: () => ({ kind: "in-process", start }),
  });

  it("a start() that never settles ends the run at the timeout, reported", async () => {
    const t0 = performance.now();
    const r = await runGuest({ vmm: plan(() => new Promise<RunningVm>(() => {})), kernel: "/x", timeoutMs: 200, stopTimeoutMs: 200 });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(r.timedOut).toBe(true);
    expect(r.guestExit).toBeNull();
    expect(r.harnessProblems.join("\n")).toMatch(/start\(\) had not settled[\s\S]*did not settle/);
  });

  it("a start() that arrives late is stopped", async () => {
    let stops = 0;
    const vm: RunningVm = { exited: new Promise(() => {}), stop: async () => void stops++ };
    const r = await runGuest({
      vmm: plan(() => new Promise<RunningVm>((res) => setTimeout(() => res(vm), 400))),
      kernel: "/x",
      timeoutMs: 100,
      stopTimeoutMs: 1000,
    });
    expect(r.timedOut).toBe(true);
    expect(stops).toBe(1);
  });

  it("a stop() that never settles does not hang the run: bounded and reported", async () => {
    const t0 = performance.now();
    const vm: RunningVm = { exited: new Promise(() => {}), stop: () => new Promise<void>(() => {}) };
    const r = await runGuest({ vmm: plan(() => vm), kernel: "/x", timeoutMs: 200, stopTimeoutMs: 300 });
    expect(performance.now() - t0).toBeLessThan(2500);
    expect(r.timedOut).toBe(true);
    expect(r.harnessProblems).toEqual(["stop() did not settle within 300 ms", "exited did not settle within 300 ms of stop()"]);
  });

  it("an in-process exit value needs the guest's RESULT exit= too", async () => {
    const vm = (io: { serial(b: Uint8Array): void }, line: string): RunningVm => {
      io.serial(Buffer.from(line));
      return { exited: Promise.resolve({ guestExitValue: 0 }), stop: async () => {} };
    };
    const none = await runGuest({ vmm: plan2((io) => vm(io, "booting\n")), kernel: "/x" });
    expect(none.vmmExitValue).toBe(0);
    expect(none.guestExit).toBeNull();
    const ok = await runGuest({ vmm: plan2((io) => vm(io, "RESULT exit=0\n")), kernel: "/x" });
    expect(ok.guestExit).toBe(0);
  });
});

function plan2(start: (io: { serial(b: Uint8Array): void }) => RunningVm): VmmLauncher {
  return { name: "in-process", provides: [], plan: () => ({ kind: "in-process", start }) };
}
