import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { blkImageProblems, blkPattern, blkSectorImage } from "./blk-image.js";
import { fuzzProblems, QEMU_FUZZ_DEFECTS, FUZZ_CASES, selftestProblems } from "./expect.js";
import { spawn } from "node:child_process";
import { consoleProblems, findProcess, processRss, smpProblems, watchBalloon } from "./peer-checks.js";
import { parseResults } from "./results.js";
import type { GuestRun } from "./run-guest.js";

function run(exitCode: number | null, ...text: string[]): GuestRun {
  const lines = text.map((t, i) => ({ text: t, tMs: i }));
  return {
    guestExit: exitCode, exitProblem: exitCode === null ? "test run without an exit" : null, exitCode, vmmExitValue: exitCode,
    vmmExit: null, timedOut: false, stoppedOnSerial: false, harnessProblems: [], containment: "process-group",
    serial: text.join("\n"), lines, results: parseResults(lines), wallMs: 1, firstSerialByteMs: 0, vmmLog: "", vmm: "test",
  };
}

describe("blkPattern", () => {
  it("matches the guest's C implementation (known answers computed with gcc from guest/blk.c's blk_pat)", () => {
    expect(blkPattern(424242n, 0n, 0n, 0n).toString(16)).toBe("11f047d74c93cd6");
    expect(blkPattern(424242n, 131071n, 63n, 1n).toString(16)).toBe("cc45f7e1322c2112");
    expect(blkPattern(424242n, 7n, 5n, 2n).toString(16)).toBe("c19b149a2c79a412");
    expect(blkPattern((1n << 64n) - 1n, 99999999999n, 1n, 0n).toString(16)).toBe("ef035d176fb1ebb"); // wraps mod 2^64
  });
  it("differs for every word of a sector and between sectors and variants", () => {
    const a = blkSectorImage(1n, 5n, 0n);
    const words = new Set(Array.from({ length: 64 }, (_, k) => a.readBigUInt64LE(k * 8)));
    expect(words.size).toBe(64);
    expect(a.equals(blkSectorImage(1n, 6n, 0n))).toBe(false);
    expect(a.equals(blkSectorImage(1n, 5n, 1n))).toBe(false);
    expect(a.equals(blkSectorImage(2n, 5n, 0n))).toBe(false);
  });
});

describe("blkImageProblems", () => {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-blkcheck-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const image = (sectors: number, fill: (put: (s: number, variant: bigint) => void) => void): string => {
    const p = join(dir, `img-${Math.random()}`);
    const fd = openSync(p, "w");
    ftruncateSync(fd, sectors * 512);
    fill((s, v) => writeSync(fd, blkSectorImage(9n, BigInt(s), v), 0, 512, s * 512));
    closeSync(fd);
    return p;
  };
  const rec = ["RESULT seed=9", "RESULT blk.wrote=0:2", "RESULT blk.wrote=14:2", "RESULT blk.refused=15:1"];

  it("accepts an image holding every written sector", () => {
    const p = image(16, (put) => [0, 1, 14, 15].forEach((s) => put(s, 0n)));
    expect(blkImageProblems(run(0, ...rec).results, p, { minRanges: 2 })).toEqual([]);
  });
  it("reports sectors that never reached the image, a refused write that landed, and missing coverage", () => {
    const p = image(16, (put) => { put(0, 0n); put(14, 0n); put(15, 1n); });
    expect(blkImageProblems(run(0, ...rec).results, p, { minRanges: 3 })).toEqual([
      "sector 1 (blk.wrote=0:2) does not hold the guest's data",
      "sector 15 (blk.wrote=14:2) does not hold the guest's data",
      "sector 15 holds the data of a write that was refused (blk.refused=15:1)",
      "only 2 written ranges reported",
    ]);
    const q = image(32, (put) => [0, 1, 14, 15].forEach((s) => put(s, 0n)));
    expect(blkImageProblems(run(0, ...rec).results, q, { minRanges: 2 })).toEqual(["the last sector was not written"]);
  });
  it("needs the seed", () => {
    expect(blkImageProblems(run(0, "RESULT blk.wrote=0:1").results, "/nonexistent")).toEqual([`no "RESULT seed=" line`]);
  });
});

describe("consoleProblems and smpProblems", () => {
  it("compares the peer's record with what the guest sent", () => {
    const r = run(0, 'RESULT console.sent="hello x"');
    expect(consoleProblems(r, Buffer.from("hello x\n"))).toEqual([]);
    expect(consoleProblems(r, Buffer.alloc(0))).toEqual(["the host's console peer received nothing"]);
    expect(consoleProblems(r, Buffer.from("hello y\n"))).toHaveLength(1);
    expect(consoleProblems(run(0), Buffer.from("x"))).toEqual([`no "RESULT console.sent=" line`]);
  });
  it("requires cpus=<vcpus> and vcpus-1 counting APs", () => {
    const ok = run(0, 'RESULT cmdline="mode=smp cpus=2"', "RESULT smp.started=1", "PASS smp.started", "RESULT smp.ap1_count_delta=5", "PASS smp.counting");
    expect(smpProblems(ok, 2)).toEqual([]);
    expect(smpProblems(ok, 3)).toEqual(["the guest was not told cpus=3", "smp.started=1, want 2", "AP 2 did not count"]);
    const zero = run(0, 'RESULT cmdline="mode=smp cpus=1"', "RESULT smp.started=0", "PASS smp.started", "PASS smp.counting");
    expect(smpProblems(zero, 2)).toEqual(["the guest was not told cpus=2", "smp.started=0, want 1", "AP 1 did not count"]);
  });
});

describe("selftestProblems and fuzzProblems", () => {
  it("requires the interrupt checks by default and the polling SKIP with interrupts off", () => {
    const base = ["PASS cpu.cpl3", "PASS pio.scratch", "PASS mem.rw", "PASS rng.init", "PASS rng.read", "RESULT exit=0"];
    const skips = ["blk", "console", "net", "vsock", "balloon", "rtc"].map((k) => `SKIP ${k} absent`);
    const polled = run(0, ...base, ...skips, "SKIP irq polling (irq=0)");
    expect(selftestProblems(polled, ["rng"], { interrupts: false })).toEqual([]);
    expect(selftestProblems(polled, ["rng"])).toEqual(["missing PASS irq.setup", "missing PASS rng.irq"]);
    expect(selftestProblems(run(0, ...base, ...skips, "PASS irq.setup", "PASS rng.irq"), ["rng"])).toEqual([]);
  });
  it("with vsockEcho, wants the stream checks of an attached vsock", () => {
    const base = ["PASS cpu.cpl3", "PASS pio.scratch", "PASS mem.rw", "PASS vsock.cid", "PASS vsock.rst", "RESULT exit=0", "SKIP irq polling (irq=0)"];
    const skips = ["blk", "rng", "console", "net", "balloon", "rtc"].map((k) => `SKIP ${k} absent`);
    const noStream = run(0, ...base, ...skips, "SKIP vsock.echo no vsock_port= on the command line");
    expect(selftestProblems(noStream, ["vsock"], { interrupts: false })).toEqual([]);
    expect(selftestProblems(noStream, ["vsock"], { interrupts: false, vsockEcho: true })).toEqual([
      "missing PASS vsock.connect", "missing PASS vsock.echo", "missing PASS vsock.close",
    ]);
    const stream = run(0, ...base, ...skips, "PASS vsock.connect", "PASS vsock.echo", "PASS vsock.close");
    expect(selftestProblems(stream, ["vsock"], { interrupts: false, vsockEcho: true })).toEqual([]);
  });
  it("wants exactly the known defects to fail", () => {
    const lines = ["RESULT seed=1", "PASS fuzz.recovers-after-reset"];
    for (const c of FUZZ_CASES) {
      if (QEMU_FUZZ_DEFECTS.includes(c)) lines.push(`FAIL fuzz.${c} completed with status OK a request that could not have been done`, `RESULT fuzz.${c}.verdict=fail`);
      else lines.push(`RESULT fuzz.${c}.verdict=pass`);
    }
    expect(fuzzProblems(run(1, ...lines), QEMU_FUZZ_DEFECTS)).toEqual([]);
    expect(fuzzProblems(run(1, ...lines))).toEqual([
      "buffer_outside_memory: verdict fail (completed with status OK a request that could not have been done), want pass",
      "buffer_wraps_2_64: verdict fail (completed with status OK a request that could not have been done), want pass",
      "exit value 1 (want 0)",
    ]);
    // a verdict logic that stops catching a defect
    const lenient = lines.map((l) => l.replace("buffer_wraps_2_64.verdict=fail", "buffer_wraps_2_64.verdict=pass")).filter((l) => !l.startsWith("FAIL fuzz.buffer_wraps"));
    expect(fuzzProblems(run(1, ...lenient), QEMU_FUZZ_DEFECTS)).toEqual(["buffer_wraps_2_64: verdict pass, want fail"]);
  });
});

describe("watchBalloon", () => {
  it("finds the VMM process by a marker in its command line and samples its RSS at the guest's markers", async () => {
    const marker = `ts-vmm-marker-${process.pid}-${Date.now()}`;
    const child = spawn("sh", ["-c", "sleep 5", marker], { stdio: "ignore" });
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(findProcess(marker)).toBe(child.pid);
      expect(processRss(child.pid!)).toBeGreaterThan(0);
      const w = watchBalloon(marker);
      w.onSerial("RESULT balloon.touched=4096\nRESULT balloon.inf");
      w.onSerial("lated=4096\n");
      expect(w.samples.touched).toBeGreaterThan(0);
      expect(w.samples.inflated).toBeGreaterThan(0);
      // the shell released nothing between the two samples: a 16 MiB inflate would not be believed
      expect(w.problems(run(0, "RESULT balloon.inflated=16777216"))[0]).toMatch(/^the VMM's RSS went from \d+ to \d+ bytes/);
      expect(watchBalloon("no-such-marker-x").problems(run(0))).toEqual([`no "RESULT balloon.inflated=" line`, "RSS not sampled at both markers"]);
    } finally {
      child.kill();
    }
  });
});
