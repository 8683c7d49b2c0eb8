import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { jobScript, L1Parser, NESTED_MARKERS, prepare, type NestedGuest } from "../src/nested.js";
import { snapshotReport } from "../src/nested-snapshot.js";
import { TestGuestsError, type VmmLauncher } from "../src/index.js";

const FAKE = fileURLToPath(new URL("./fixtures/fake-snapshot-vmm.mjs", import.meta.url));
const kernel = fileURLToPath(new URL("./helpers.ts", import.meta.url));

/** The stand-in VMM at `script` (fixtures/fake-snapshot-vmm.mjs or a copy) as a launcher that can snapshot. */
const fakeAt = (script: string): VmmLauncher => ({
  name: "fake", provides: [],
  plan: (spec) => ({ kind: "process", file: process.execPath, args: [script, "first", ...spec.extraArgs], guestExitValue: () => null }),
  snapshot: {
    snapshotArgs: ({ dir, signal, apiSock }) => ["--snap", `${signal}:${dir}`, ...(apiSock !== undefined ? ["--api", apiSock] : [])],
    snapshotDoneText: "snapshot written",
    snapshotFailedText: "snapshot failed",
    restorePlan: ({ dir }) => ({ kind: "process", file: process.execPath, args: [script, "restore", dir], guestExitValue: () => null }),
  },
});
const fake = fakeAt(FAKE);

describe("a nested snapshot step's options", () => {
  it("refuses a launcher that cannot snapshot, QEMU, bad markers, paths and durations", async () => {
    const g: NestedGuest = { name: "s", vmm: fake, kernel, snapshot: { atSerial: "BEAT n=5" } };
    await expect(prepare({ ...g, vmm: { ...fake, snapshot: undefined } as VmmLauncher })).rejects.toThrow(/cannot snapshot/);
    await expect(prepare({ ...g, vmm: "qemu" })).rejects.toThrow(TestGuestsError);
    await expect(prepare({ ...g, snapshot: { atSerial: "" } })).rejects.toThrow(/atSerial/);
    await expect(prepare({ ...g, snapshot: { atSerial: "x", dir: "/run/../etc" } })).rejects.toThrow(/snapshot.dir/);
    await expect(prepare({ ...g, snapshot: { atSerial: "x", dir: "rel/dir" } })).rejects.toThrow(/snapshot.dir/);
    await expect(prepare({ ...g, snapshot: { atSerial: "x", pauseMs: -1 } })).rejects.toThrow(/pauseMs/);
    const { prepared } = await prepare({ ...g, snapshot: { atSerial: "x", pauseMs: 1000 } }, 4);
    expect(prepared.plan.args).toEqual([FAKE, "first", "--snap", "SIGUSR1:/run/tsvmm/snap-4", "--api", "/run/tsvmm/api-4.sock"]);
    expect(prepared.timeoutMs).toBe(2 * 120_000 + 10_000);
  });
});

/*
 * The job script's snapshot step run by a real shell on this host (in a private mount
 * namespace with its own /tmp and /run, as L1 has), with the stand-in VMM: its console
 * output goes through the same L1Parser as L1's.
 */
describeWith({ tools: ["busybox", "unshare", "setsid"] }, "a nested snapshot step's job script, run by busybox sh here (stand-in VMM)", () => {
  it("pauses through the API, snapshots on the signal, kills the first VMM, restores in a second one, and keeps both outputs and logs apart", async () => {
    // The namespace mounts its own /tmp and /run: a checkout under /tmp would vanish from
    // the shell's view, so the stand-in runs from a copy under ~/.cache.
    mkdirSync(join(homedir(), ".cache"), { recursive: true });
    const copyDir = mkdtempSync(join(homedir(), ".cache", "ts-vmm-fake-vmm-"));
    const script = join(copyDir, "fake-snapshot-vmm.mjs");
    copyFileSync(FAKE, script);
    try {
    const { prepared } = await prepare({
      name: "s", vmm: fakeAt(script), kernel, timeoutMs: 30_000, stopOnSerial: "BEAT n=35",
      snapshot: { atSerial: "BEAT n=5", pauseMs: 1500, beforeSnapshotMs: 500, keepRunningMs: 500, restoredMarker: "BEAT n=" },
    }, 0);
    const job = `${jobScript([prepared], "n0nce")}echo "${NESTED_MARKERS.done}"\n`;
    const c = spawn("unshare", ["-m", "sh", "-c", "mount -t tmpfs none /tmp && mount -t tmpfs none /run && exec busybox sh -s"], { stdio: ["pipe", "pipe", "pipe"], timeout: 60_000 });
    let stdout = "", stderr = "";
    c.stdout.on("data", (b: Buffer) => { stdout += b.toString(); });
    c.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    c.stdin.end(job);
    const status = await new Promise<number | null>((res) => c.once("close", res));
    const r = { status, stdout, stderr };
    expect(r.status, r.stderr).toBe(0);
    const p = new L1Parser(0, "n0nce");
    p.push(r.stdout, 1);
    p.finish(2);
    expect(p.done).toBe(true);
    const e = p.ends.get(0)!;
    // The first VMM: killed by L1 after its snapshot; the step's end is the restored one's stop marker.
    expect(e.first).toMatchObject({ status: 137, reason: "snapshot" });
    expect(e.first!.log).toMatch(/^snapshot written to \/run\/tsvmm\/snap-0$/);
    expect(e).toMatchObject({ status: 137, reason: "marker", log: "" });
    const firstBeats = e.first!.lines.map((l) => Number(/^BEAT n=(\d+)$/.exec(l.text)?.[1]));
    expect(firstBeats.every((x, i) => x === i + 1), e.first!.lines.map((l) => l.text).join("\n")).toBe(true);
    const rep = snapshotReport(e.side, true);
    expect(rep.pause).toMatchObject({ paused: "204", resumed: "204", info: '200 {"state":"Paused"}' });
    // Nothing printed while paused (the counts 1 s in and at the end of the pause agree).
    expect(rep.pause!.linesAtPause).toBe(rep.pause!.linesAtResume);
    expect(rep.pause!.resumedAt! - rep.pause!.pausedAt!).toBeGreaterThanOrEqual(1.4);
    expect(rep.written).toBe(true);
    expect(rep.files).toMatch(/vm\.mem.*vm\.snap/);
    // The restored VMM continues the counter the snapshot held (at least the lines seen at the signal).
    const at = Number(/^resumed at (\d+)$/.exec(e.lines[0]!.text)?.[1]);
    expect(at).toBeGreaterThanOrEqual(rep.linesAtSignal!);
    expect(e.lines[1]!.text).toBe(`BEAT n=${at + 1}`);
    expect(e.lines.at(-1)!.text).toBe("BEAT n=35");
    expect(rep.restoreStartAt).not.toBeNull();
    expect(rep.restoredMarkerAt! >= rep.restoreStartAt!).toBe(true);
    } finally {
      rmSync(copyDir, { recursive: true, force: true });
    }
  }, 90_000);
});
