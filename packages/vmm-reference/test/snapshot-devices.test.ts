// Pause/resume and snapshot/restore of the devices that take host input or
// run timers (console on a Unix socket, balloon, rtc, vsock), on real KVM with
// the micro-guest's mode=ticker, which drives each of them on every tick.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import type { VirtioBalloon, VirtioConsole, VirtioRtc, VirtioVsock } from "@ts-vmm/virtio-devices";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { Vmm, decodeSnapshotFile, type SnapshotState } from "../src/index.js";
import { http } from "./api-http.js";
import { ticksOf, until } from "./ticker.js";

vi.setConfig({ testTimeout: 90_000 });
const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

const valuesOf = (out: string, key: string): string[] => [...out.matchAll(new RegExp(`RESULT ${key.replace(".", "\\.")}=(\\S+)`, "g"))].map((m) => m[1]!);

/** A Unix socket server that records what each connection sent, in connection order. */
async function recorder(path: string, onConn?: (s: Socket) => void): Promise<{ server: Server; conns: Socket[]; text: string[] }> {
  const conns: Socket[] = [];
  const text: string[] = [];
  const server = createServer((s) => {
    const i = conns.push(s) - 1;
    text[i] = "";
    s.on("data", (b: Buffer) => (text[i] += b.toString()));
    s.on("error", () => {});
    onConn?.(s);
  });
  await new Promise<void>((res) => server.listen(path, res));
  return { server, conns, text };
}

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "device pause and snapshot/restore: console, balloon, rtc, vsock (micro-guest, mode=ticker)", () => {
  let elf = "";
  let dir = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-snapdev-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("while paused no host input reaches the guest and no timer fires; on resume the console input, balloon target and rtc alarm arrive", async () => {
    const con = await recorder(join(dir, "con-a.sock"));
    const uds = join(dir, "v-a.sock");
    const vm = Vmm.create({
      kernel: elf, memMiB: 64,
      cmdline: "mode=ticker ticks=400 spin=20000000 rtc_alarm_tick=5 rtc_alarm_ms=200",
      virtio: [{ kind: "console", socketPath: join(dir, "con-a.sock") }, { kind: "balloon" }, { kind: "rtc" }, { kind: "vsock", cid: 9, udsPath: uds }],
    });
    const dev = <T>(kind: string): T => vm.virtio.devices.find((d) => d.kind === kind)!.device as unknown as T;
    let out = "";
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => out.includes("RESULT rtc.alarm_set=5"), { what: "the alarm to be set" });
    await vm.pause();
    const rtc = dev<VirtioRtc>("rtc");
    const consoleDev = dev<VirtioConsole>("console");
    const vsock = dev<VirtioVsock>("vsock");
    const rxBefore = consoleDev.stats.rxBytes;
    const vsockRx = vsock.metrics.rxPackets;
    expect(rtc.alarmTimers).toBe(0); // the alarm's host timer is cancelled while paused
    expect(rtc.pendingAlarms).toEqual([]);
    con.conns[0]!.write("input-while-paused\n");
    vm.setBalloonTarget(3);
    // A host program connects over vsock while paused: the guest gets nothing until resume.
    const { connect } = await import("node:net");
    const host = connect(uds);
    host.on("error", () => {});
    host.write("CONNECT 1234\n");
    await new Promise((r) => setTimeout(r, 400)); // past the alarm time (200 ms after tick 5)
    const seen = ticksOf(out).length;
    expect(out).not.toContain("RESULT rtc.alarm=");
    expect(out).not.toContain("RESULT console.rx=");
    expect(out).not.toContain("RESULT balloon.ack=768");
    expect(consoleDev.stats.rxBytes).toBe(rxBefore);
    expect(consoleDev.pendingInputBytes).toBe(0); // the input stream is paused: the bytes wait in the socket
    expect(vsock.metrics.rxPackets).toBe(vsockRx);
    expect(dev<VirtioBalloon>("balloon").targetPages).toBe(768);
    expect(rtc.alarmTimers).toBe(0);
    vm.resume();
    await until(() => out.includes("RESULT rtc.alarm=") && out.includes("RESULT balloon.ack=768") && out.includes('RESULT console.rx="input-while-paused."'), { what: "the held input and alarm after resume" });
    const alarmTick = Number(valuesOf(out, "rtc.alarm")[0]);
    expect(alarmTick).toBeGreaterThanOrEqual(seen - 1); // fired after the resume, not before the pause
    // The guest got the host's REQUEST after the resume (it answers nothing: the micro-guest only counts it).
    await until(() => out.includes("RESULT vsock.rx_other=") || vsock.metrics.rxPackets > vsockRx, { what: "the vsock REQUEST after resume" });
    host.destroy();
    vm.stop();
    await run;
    vm.close();
    // Every tick's console line reached the host, in order, none lost or twice (the pause dropped nothing).
    const last = Math.max(...ticksOf(out));
    await until(() => con.text[0]!.includes(`tick ${last}\n`), { what: "the last tick's console line" });
    con.server.close();
    const lines = con.text[0]!.split("\n").filter((l) => l !== "");
    expect(lines.length).toBeGreaterThanOrEqual(last + 1);
    expect(lines).toEqual([...Array(lines.length).keys()].map((i) => `tick ${i}`));
  });

  it("snapshot in one process, SIGKILL, restore in a new process: console re-attaches, balloon acks, the rtc alarm fires, vsock resets and reconnects", async () => {
    const sdir = mkdtempSync(join(dir, "sig-"));
    const conPath = join(sdir, "con.sock");
    const uds = join(sdir, "v.sock");
    const con = await recorder(conPath);
    // The guest's vsock_port: a host program listening on <uds>_5000 (Firecracker's convention).
    const peer = await recorder(`${uds}_5000`);
    const cmdline = "mode=ticker ticks=700 spin=20000000 rtc_alarm_tick=25 rtc_alarm_ms=1500 vsock_port=5000";
    const a = spawn(process.execPath, [CLI, "run", "--kernel", elf, "--cmdline", cmdline, "--mem", "64", "--console-socket", conPath, "--balloon", "--rtc", "--vsock", `cid=7,uds=${uds}`, "--snapshot-on-signal", `SIGUSR1:${sdir}`], { stdio: ["ignore", "pipe", "pipe"] });
    let out1 = "", err1 = "";
    a.stdout.on("data", (b: Buffer) => (out1 += b.toString()));
    a.stderr.on("data", (b: Buffer) => (err1 += b.toString()));
    const gone = new Promise((r) => a.on("exit", r));
    await until(() => out1.includes("RESULT rtc.alarm_set=25"), { what: `the alarm to be set\n${out1}\n${err1}` });
    expect(valuesOf(out1, "vsock.connect")).toEqual(["2"]); // RESPONSE from <uds>_5000
    a.kill("SIGUSR1");
    await until(() => /snapshot (written|failed)/.test(err1), { what: "the snapshot" });
    expect(err1).toContain("snapshot written");
    a.kill("SIGKILL");
    await gone;
    const lastBefore = Math.max(...ticksOf(out1));
    const state = decodeSnapshotFile((await import("node:fs")).readFileSync(join(sdir, "vm.snap"))) as SnapshotState;
    expect(state.config.virtio.map((c) => c.kind)).toEqual(["console", "balloon", "rtc", "vsock"]);
    const apiSock = join(sdir, "api.sock");
    const b = spawn(process.execPath, [CLI, "run", "--restore", `${join(sdir, "vm.snap")},mem=${join(sdir, "vm.mem")}`, "--api-sock", apiSock], { stdio: ["ignore", "pipe", "pipe"] });
    let out2 = "", err2 = "";
    b.stdout.on("data", (x: Buffer) => (out2 += x.toString()));
    b.stderr.on("data", (x: Buffer) => (err2 += x.toString()));
    const code = new Promise<number | null>((r) => b.on("exit", r));
    // The restored VMM connects to the console socket again: a second connection.
    await until(() => con.conns.length === 2 && existsSync(apiSock), { what: `the restored VMM's console connection and API socket\n${err2}` });
    con.conns[1]!.write("after-restore\n");
    const patch = await http(apiSock, "PATCH", "/balloon", { amount_mib: 2 });
    expect(patch.status, patch.text).toBe(204);
    const status = await code;
    const explain = `${out2}\n--- stderr\n${err2}`;
    expect(status, explain).toBe(1); // the guest's debug-exit value 0
    expect(out2, explain).toContain("PASS ticker");
    const t2 = ticksOf(out2);
    expect(t2[0]).toBeGreaterThan(25);
    expect(t2.at(-1)).toBe(699);
    // vsock: the driver got TRANSPORT_RESET (event 0) after the restore, and its new REQUEST was answered.
    expect(valuesOf(out2, "vsock.event"), explain).toEqual(["0"]);
    expect(valuesOf(out2, "vsock.reconnect"), explain).toEqual(["2"]);
    expect(peer.conns.length).toBe(2); // the first process's connection and the restored one's
    // rtc: the alarm set before the snapshot fired in the restored guest (after its time: the guest checks).
    expect(valuesOf(out2, "rtc.alarm").length, explain).toBe(1);
    const mono = valuesOf(out2, "rtc.mono").map(BigInt);
    expect(mono[0]! >= BigInt(valuesOf(out1, "rtc.mono").at(-1)!), "MONOTONIC continues from before the snapshot").toBe(true);
    // balloon and console input, through the restored devices.
    expect(valuesOf(out2, "balloon.ack"), explain).toEqual(["512"]);
    expect(out2, explain).toContain('RESULT console.rx="after-restore."');
    // Console output after the restore reached the new connection: every tick from the restored one on.
    const lines2 = con.text[1]!.split("\n").filter((l) => l !== "");
    expect(lines2[0]).toBe(`tick ${t2[0]!}`);
    expect(lines2.at(-1)).toBe("tick 699");
    expect(t2[0]!).toBeLessThanOrEqual(lastBefore + 1);
    con.server.close();
    peer.server.close();
  });
});
