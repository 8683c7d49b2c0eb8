import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { afterAll, describe, expect, it } from "vitest";
import { sideResults } from "../src/nested-peers.js";
import { detached, guestHasL1State, guestRanStaleText, jobScript, L1_KERNEL_FAULT, L1Parser, l1PanickedEarly, prepare, serialCopies, serialReadLoop, serialTransportLoss, type NestedGuest } from "../src/nested.js";
import {
  buildLayer,
  concatLayers,
  layerHash,
  NESTED_MARKERS,
  runNested,
  sharedLibraries,
  shq,
  TestGuestsError,
  workspacePackageEntries,
  type Layer,
  type VmmLauncher,
} from "../src/index.js";

const work = mkdtempSync(join(tmpdir(), "ts-vmm-nested-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("layerHash", () => {
  const a: Layer = { name: "t", entries: [{ path: "/a", content: "x", mode: 0o644 }, { path: "/b", symlink: "a" }] };
  it("does not depend on entry order", () => {
    expect(layerHash({ name: "t", entries: [...a.entries].reverse() })).toBe(layerHash(a));
  });
  it("changes with content, mode and symlink target", () => {
    const h = layerHash(a);
    expect(layerHash({ name: "t", entries: [{ path: "/a", content: "y", mode: 0o644 }, a.entries[1]!] })).not.toBe(h);
    expect(layerHash({ name: "t", entries: [{ path: "/a", content: "x", mode: 0o755 }, a.entries[1]!] })).not.toBe(h);
    expect(layerHash({ name: "t", entries: [a.entries[0]!, { path: "/b", symlink: "c" }] })).not.toBe(h);
  });
});

describe("shq", () => {
  it.each(["plain", "with space", "it's", "$HOME `x` \"q\" \\ *", "", "a\nb"])("quotes %j so sh sees it unchanged", (s) => {
    expect(execFileSync("sh", ["-c", `printf %s ${shq(s)}`], { encoding: "utf8" })).toBe(s);
  });
});

describe("buildLayer / concatLayers", () => {
  it("writes a zstd newc archive with the entries at their paths, reuses it by hash, and concatenates with 4-byte padding", async () => {
    const layer: Layer = {
      name: "unit",
      entries: [
        { path: "/etc/x.txt", content: "hello\n", mode: 0o600 },
        { path: "/etc/link", symlink: "x.txt" },
        { path: "/empty", dir: true },
      ],
    };
    const f = await buildLayer(layer, work);
    expect(await buildLayer(layer, work)).toBe(f);
    const list = execFileSync("sh", ["-c", `zstd -dc "$1" | cpio -t --quiet`, "sh", f], { encoding: "utf8" }).split("\n");
    expect(list).toEqual(expect.arrayContaining(["etc/x.txt", "etc/link", "empty"]));
    const out = join(work, "cat");
    concatLayers([f, f], out);
    const n = readFileSync(f).byteLength;
    const pad = (4 - (n % 4)) % 4;
    expect(readFileSync(out).byteLength).toBe(2 * (n + pad));
  });
});

describe("workspacePackageEntries", () => {
  it("takes a package's dist, addons and run-time workspace dependencies with their links, and nothing else", async () => {
    const ref = resolve(import.meta.dirname, "..", "..", "vmm-reference");
    const entries = await workspacePackageEntries([ref]);
    const paths = entries.map((e) => e.path);
    const pkgs = resolve(ref, "..");
    expect(paths).toContain(join(ref, "package.json"));
    expect(paths).toContain(join(ref, "dist", "cli.js"));
    expect(paths).toContain(join(pkgs, "kvm-ioctls", "build", "Release", "kvm_ioctls.node"));
    const link = entries.find((e) => e.path === join(ref, "node_modules", "@ts-vmm", "kvm-ioctls"));
    expect(link && "symlink" in link ? link.symlink : null).toBe("../../../kvm-ioctls");
    // A registry dependency needed at run time (node-gyp-build loads the addons) comes whole, linked as on the host.
    const ngb = entries.find((e) => e.path === join(pkgs, "kvm-ioctls", "node_modules", "node-gyp-build"));
    expect(ngb && "symlink" in ngb).toBe(true);
    expect(paths.some((p) => /node-gyp-build[/@].*node-gyp-build\/package\.json$/.test(p) || p.endsWith(join("node-gyp-build", "package.json")))).toBe(true);
    expect(paths.some((p) => p.endsWith(join("node-gyp-build", "node-gyp-build.js")))).toBe(true);
    // devDependencies (test-guests, test-utils) and source maps stay out.
    expect(paths.some((p) => p.includes(join(pkgs, "test-guests")))).toBe(false);
    expect(paths.some((p) => p.endsWith(".map"))).toBe(false);
  });
  it("refuses a directory without package.json", async () => {
    await expect(workspacePackageEntries([work])).rejects.toMatchObject({ code: "InvalidArgument" });
  });
});

describe("sharedLibraries", () => {
  it("lists the C library and the ELF interpreter of node", async () => {
    const libs = await sharedLibraries(process.execPath);
    expect(libs.some((l) => /\/libc\.so\.6$/.test(l))).toBe(true);
    expect(libs.some((l) => /ld-linux-x86-64\.so\.2$/.test(l))).toBe(true);
  });
});

describe("runNested option checks (before anything starts)", () => {
  const guest = { name: "g", vmm: "qemu" as const, kernel: "/nonexistent" };
  it("rejects an empty guest list, bad sizes and timeouts, duplicate names, and devices L1 cannot have", async () => {
    await expect(runNested({ guests: [] })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest], l1Vcpus: 0 })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest], l1MemMiB: 100 })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest, guest] })).rejects.toBeInstanceOf(TestGuestsError);
    await expect(runNested({ guests: [{ ...guest, timeoutMs: 10 }] })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [{ ...guest, devices: [{ kind: "console" }] }] })).rejects.toMatchObject({ code: "Unsupported" });
    await expect(runNested({ guests: [{ ...guest, devices: [{ kind: "rtc" }] }] })).rejects.toMatchObject({ code: "Unsupported" });
  });
});

describe("the job script's device side (taps, peers, RSS samples, QMP), without L1", () => {
  const kernel = join(import.meta.dirname, "helpers.ts");
  const all: NestedGuest = {
    name: "q", vmm: "qemu", kernel, memMiB: 256, timeoutMs: 60_000,
    devices: [{ kind: "net", tap: "tsvmm0" }, { kind: "vsock", cid: 7 }, { kind: "balloon", amountMiB: 64 }],
    peers: {
      tcp: { port: 5201, guestToHost: 100, hostToGuest: 200, seed: 7 },
      vsock: { hostPort: 5000, guestPort: 5001, listenMarker: "LISTENING now", guestToHost: 10, hostToGuest: 20, seed: 0xffffffff },
      balloon: { touchedMarker: "TOUCHED it", inflatedMarker: "INFLATED it" },
    },
  };
  /** A launcher with Firecracker's vsock convention (like ours): plans a plain command. */
  const fc: VmmLauncher = {
    name: "fc", provides: ["net", "vsock", "balloon"],
    plan: (spec) => ({ kind: "process", file: "busybox", args: ["true", JSON.stringify(spec.devices)], guestExitValue: () => null }),
  };
  const lines = (script: string): string[] => script.split("\n");
  const index = (script: string, needle: string): number => lines(script).findIndex((l) => l.includes(needle));

  it("QEMU: creates the tap and starts the listeners before the VMM, connects at the marker, sets the balloon by QMP after the first RSS sample", async () => {
    const { prepared } = await prepare(all, 3);
    expect(prepared.plan.args).toEqual(expect.arrayContaining(["-qmp", "unix:/run/tsvmm/qmp-3.sock,server=on,wait=off", "vhost-vsock-device,guest-cid=7"]));
    expect(prepared.plan.args).toContain("tap,id=net0,ifname=tsvmm0,script=no,downscript=no");
    const js = jobScript([prepared], "n0nce");
    // Valid sh, as busybox will read it.
    expect(execFileSync("sh", ["-n", "-c", js], { encoding: "utf8" })).toBe("");
    const vmm = index(js, "setsid ");
    expect(index(js, "tunctl -t tsvmm0")).toBeGreaterThan(-1);
    expect(index(js, "tunctl -t tsvmm0")).toBeLessThan(vmm);
    expect(index(js, "ip addr add 10.0.2.2/24 dev tsvmm0")).toBeLessThan(vmm);
    expect(index(js, "'tcp-listen' '10.0.2.2' '5201' '100' '200' '7' '60'")).toBeLessThan(vmm);
    // vhost: AF_VSOCK in L1; the host-initiated stream sends hostToGuest first with seed + 1 (mod 2^32).
    expect(index(js, "'vsock-listen' '5000' '10' '20' '4294967295' '60'")).toBeLessThan(vmm);
    const h2g = lines(js).find((l) => l.includes("'vsock-connect'"))!;
    expect(h2g).toContain("*'LISTENING now'*");
    expect(h2g).toContain("'vsock-connect' '7' '5001' '20' '10' '0' '60'");
    expect(index(js, "'vsock-connect'")).toBeGreaterThan(vmm);
    const touched = lines(js).find((l) => l.includes("*'TOUCHED it'*"))!;
    // 256 − 64 MiB, after the RSS sample.
    expect(touched.indexOf("rss before")).toBeLessThan(touched.indexOf('{"execute":"balloon","arguments":{"value":201326592}}'));
    expect(lines(js).find((l) => l.includes("*'INFLATED it'*"))).toContain("rss after");
    // Afterwards: the tap goes, the side block follows the log block.
    expect(index(js, "tunctl -d tsvmm0")).toBeGreaterThan(vmm);
    expect(index(js, `${NESTED_MARKERS.sideBegin}0#n0nce`)).toBeGreaterThan(index(js, `${NESTED_MARKERS.logEnd}0#n0nce`));
  });

  it("Firecracker's convention (our VMM): the guest-initiated socket is <udsPath>_<hostPort>, the host connects to udsPath; no QMP", async () => {
    const { prepared } = await prepare({ ...all, vmm: fc }, 1);
    const devices = JSON.parse(prepared.plan.args[1]!) as unknown[];
    expect(devices).toEqual([{ kind: "net", tap: "tsvmm0" }, { kind: "vsock", cid: 7, udsPath: "/run/tsvmm/vsock-1.sock" }, { kind: "balloon", amountMiB: 64 }]);
    const js = jobScript([prepared], "n0nce");
    expect(execFileSync("sh", ["-n", "-c", js], { encoding: "utf8" })).toBe("");
    expect(index(js, "'unix-listen' '/run/tsvmm/vsock-1.sock_5000' '10' '20' '4294967295' '60'")).toBeLessThan(index(js, "setsid "));
    expect(lines(js).find((l) => l.includes("*'LISTENING now'*"))).toContain("'unix-connect' '/run/tsvmm/vsock-1.sock' '5001' '20' '10' '0' '60'");
    expect(js).not.toContain("qmp");
    expect(prepared.plan.args).not.toContain("-qmp");
  });

  it("refuses peers without their devices, bad taps, ports and markers, and QEMU's balloon watch without a target", async () => {
    const bad = async (g: Partial<NestedGuest>, code = "InvalidArgument"): Promise<void> => {
      await expect(prepare({ ...all, ...g } as NestedGuest)).rejects.toMatchObject({ code });
    };
    await bad({ devices: [{ kind: "vsock", cid: 7 }, { kind: "balloon", amountMiB: 64 }] }); // tcp peer, no tap
    await bad({ devices: [{ kind: "net" }, { kind: "vsock", cid: 7 }, { kind: "balloon", amountMiB: 64 }] }); // user networking has no tap
    await bad({ devices: [{ kind: "net", tap: "tsvmm0" }, { kind: "balloon", amountMiB: 64 }] }); // vsock peer, no vsock
    await bad({ devices: [{ kind: "net", tap: "tsvmm0" }, { kind: "vsock", cid: 7 }, { kind: "balloon" }] }); // QMP target unknown
    await bad({ devices: [{ kind: "net", tap: "tsvmm0" }, { kind: "vsock", cid: 7 }] }); // balloon watch, no balloon
    await bad({ devices: [{ kind: "net", tap: "bad name" }] , peers: {} });
    await bad({ devices: [{ kind: "net", tap: "a" }, { kind: "net", tap: "b" }], peers: {} }, "Unsupported");
    await bad({ devices: [{ kind: "vsock", cid: 2 }], peers: {} });
    await bad({ devices: [{ kind: "vsock", cid: 7, udsPath: "relative.sock" }], peers: {} });
    await bad({ devices: [{ kind: "balloon", amountMiB: 256 }], peers: {} });
    await bad({ peers: { ...all.peers, tcp: { port: 0, guestToHost: 1, hostToGuest: 1, seed: 1 } } });
    await bad({ peers: { ...all.peers, tcp: { port: 1, guestToHost: -1, hostToGuest: 1, seed: 1 } } });
    await bad({ peers: { ...all.peers, balloon: { touchedMarker: "a\nb", inflatedMarker: "c" } } });
    await bad({ peers: { ...all.peers, vsock: { ...all.peers!.vsock!, listenMarker: "" } } });
    await bad({ vmm: { ...fc, provides: ["net"] } }, "Unsupported");
  });

  it("sideResults reads the peers' lines and the RSS samples; a started peer that printed nothing is a failure", () => {
    const side = [
      "tap tsvmm0 up 10.0.2.2/24",
      "rss before VmRSS:300000 RssAnon:250000 RssFile:40000 RssShmem:10000 ",
      "rss after VmRSS:240000 RssAnon:190000 RssFile:40000 RssShmem:10000 ",
      "tcp result=ok sent=200 received=100",
      "vsock-g2h result=fail why=timeout sent=0 received=0",
      "vsock-h2g ",
      "qmp result=ok reply={\"return\":_{}}",
    ];
    const plan = { tap: "tsvmm0", tcp: null, vsock: null, balloon: { watch: { touchedMarker: "a", inflatedMarker: "b" }, qmp: null } };
    const r = sideResults(plan, side);
    expect(r.balloonRss).toEqual({ beforeKiB: 300000, afterKiB: 240000 });
    expect(r.peers.tcp).toMatchObject({ ok: true, sent: 200, received: 100 });
    expect(r.peers["vsock-g2h"]).toMatchObject({ ok: false, why: "timeout" });
    expect(r.peers["vsock-h2g"]).toMatchObject({ ok: false, why: "no-result" });
    expect(r.peers.qmp).toMatchObject({ ok: true, sent: null });
    expect(sideResults({ ...plan, balloon: null }, side).balloonRss).toBeNull();
    expect(sideResults(plan, ["rss before ", "rss after VmRSS:x"]).balloonRss).toEqual({ beforeKiB: null, afterKiB: null });
  });

  it("L1Parser keeps a step's side block, which a guest cannot forge without the nonce", () => {
    const M = NESTED_MARKERS;
    const p = new L1Parser(0, "n0nce");
    p.push(`${M.begin}0#n0nce uptime=1\r\nhello\r\n${M.sideBegin}0#guess\r\nfake\r\n`);
    p.push(`\r\n${M.end}0#n0nce status=0 reason=exit\r\n${M.logBegin}0#n0nce\r\n${M.logEnd}0#n0nce\r\n`);
    p.push(`${M.sideBegin}0#n0nce\r\ntap tsvmm0 up 10.0.2.2/24\r\ntcp result=ok sent=1 received=2\r\n\r\n${M.sideEnd}0#n0nce\r\n`);
    p.finish();
    const e = p.ends.get(0)!;
    expect(e.lines.map((l) => l.text)).toEqual(["hello", `${M.sideBegin}0#guess`, "fake"]);
    expect(e.side).toEqual(["tap tsvmm0 up 10.0.2.2/24", "tcp result=ok sent=1 received=2"]);
  });
});

describe("serial copies: where a step's serial output lost bytes", () => {
  const kernel = join(import.meta.dirname, "helpers.ts");

  it("QEMU logs its 8250 output to a file in L1 (its chardev's logfile=)", async () => {
    const { prepared } = await prepare({ name: "q", vmm: "qemu", kernel }, 2);
    expect(prepared.plan.args).toContain("stdio,id=ser0,signal=off,logfile=/tmp/vmmser-2,logappend=off");
    expect(prepared.plan.args.filter((a) => a.startsWith("stdio,id=ser0"))).toHaveLength(1);
  });

  it("the job script counts what L1 read; the host's copy is compared with it, and a byte or line lost on L1's console is found", async () => {
    // A stand-in VMM that prints two CRLF lines and a last one without a newline.
    const echo: VmmLauncher = {
      name: "echo", provides: [],
      plan: () => ({ kind: "process", file: "printf", args: ["one\\r\\ntwo two\\r\\nlast"], guestExitValue: () => null }),
    };
    const { prepared } = await prepare({ name: "e", vmm: echo, kernel, timeoutMs: 10_000 }, 0);
    const job = `${jobScript([prepared], "n0nce")}echo "${NESTED_MARKERS.done}"\n`;
    const c = spawn("unshare", ["-m", "sh", "-c", "mount -t tmpfs none /tmp && mount -t tmpfs none /run && exec busybox sh -s"], { stdio: ["pipe", "pipe", "pipe"], timeout: 30_000 });
    let stdout = "", stderr = "";
    c.stdout.on("data", (b: Buffer) => { stdout += b.toString("latin1"); });
    c.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    c.stdin.end(job);
    const status = await new Promise<number | null>((res) => c.once("close", res));
    expect(status, stderr).toBe(0);
    const p = new L1Parser(0, "n0nce");
    p.push(stdout, 1);
    p.finish(2);
    const e = p.ends.get(0)!;
    expect(e.lines.map((l) => l.text)).toEqual(["one", "two two", "last"]);
    const g = { name: "e", side: e.side, lines: e.lines };
    // 5 + 9 + 5 bytes as L1 copied them (the last line gets its newline there), 3 lines, 17 without CR.
    expect(serialCopies(g)).toEqual({ vmmBytes: null, loopBytes: 19, loopLines: 3, loopBytesNoCr: 17, hostLines: 3, hostBytes: 17 });
    expect(serialTransportLoss(g)).toBeNull();
    // One byte lost on L1's console, then a whole line.
    const lostByte = { ...g, lines: e.lines.map((l, k) => (k === 1 ? { ...l, text: "wo two" } : l)) };
    expect(serialTransportLoss(lostByte)).toMatch(/^e: the host received 3 lines, 16 bytes of the 3 lines, 17 bytes/);
    expect(serialTransportLoss({ ...g, lines: e.lines.slice(1) })).toMatch(/received 2 lines/);
    // More bytes in the VMM's own log than L1 read is back-pressure (QEMU logs a write that
    // failed with EAGAIN, and each retry), not a loss on the way to the host.
    const side = e.side.map((l) => l.replace(/^serial-copies vmm=none/, "serial-copies vmm=25"));
    expect(serialCopies({ ...g, side })?.vmmBytes).toBe(25);
    expect(serialTransportLoss({ ...g, side })).toBeNull();
    expect(serialCopies({ side: [], lines: [] })).toBeNull();
  });
});

describe("serialReadLoop: L1's line reader loses nothing when a child of the job ends mid-line (busybox ash)", () => {
  // A writer that stops mid-line (1.2 s) twice, and a child of the job's shell that ends
  // inside each pause (0.6 s after it starts, ≥ 0.4 s from either edge): one started before
  // the loop, one the loop starts at a line (as the h2g peer is started at the guest's
  // listening marker).
  const writer = (fifo: string): string =>
    `( printf 'HEAD-PART-'; sleep 1.2; printf 'tail\\n'; printf 'START\\n'; sleep 0.2; printf 'SECOND-'; sleep 1.2; printf 'line\\n' ) > ${fifo} &`;
  const run = (script: string): string[] =>
    execFileSync("busybox", ["sh", "-c", script], { encoding: "utf8", timeout: 20_000 }).split("\n").filter((l) => l !== "");
  const dir = (): string => mkdtempSync(join(work, "read-loop-"));

  it("the naive loop (the job's own shell reads, the body starts a background child) loses the heads of both lines: the busybox behaviour this guards against", () => {
    const d = dir();
    const script = [
      `mkfifo ${d}/f`, writer(`${d}/f`), "( sleep 0.6 ) &",
      `while IFS= read -r l || [ -n "$l" ]; do echo "got [$l]"; case "$l" in START) ( sleep 0.6 ) & ;; esac; l=""; done < ${d}/f`,
    ].join("\n");
    expect(run(script)).toEqual(["got [tail]", "got [START]", "got [line]"]);
  });

  it("serialReadLoop with detached starts: every line whole, the detached child's pid recorded", () => {
    const d = dir();
    const script = [
      `mkfifo ${d}/f`, writer(`${d}/f`), "( sleep 0.6 ) &",
      ...serialReadLoop(`${d}/f`, [`echo "got [$l]"`, `case "$l" in START) ${detached("sleep 0.6", `${d}/pids`)} ;; esac`]),
      `echo "pids $(wc -l < ${d}/pids)"`,
    ].join("\n");
    expect(run(script)).toEqual(["got [HEAD-PART-tail]", "got [START]", "got [SECOND-line]", "pids 1"]);
  });
});

describe("l1PanickedEarly (the one L1 retry)", () => {
  // What the L1 kernel printed once under multi-threaded TCG while kvm-amd loaded (2026-12-01).
  const oops = "[    6.080347] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\r\n[    6.080730] Kernel panic - not syncing: Fatal exception in interrupt\r\n";
  it("is true for a panic before any guest step started", () => {
    const p = new L1Parser(0, "n0nce");
    p.push(`${NESTED_MARKERS.up} uptime=1.2 cpus=2\r\n`);
    p.push(oops);
    p.finish();
    expect(l1PanickedEarly(p)).toBe(true);
  });
  it("is false once a guest started, after /init finished, and without a panic", () => {
    const started = new L1Parser(0, "n0nce");
    started.push(`${NESTED_MARKERS.begin}0#n0nce uptime=2.0\r\n`);
    started.push(oops);
    started.finish();
    expect(l1PanickedEarly(started)).toBe(false);
    const done = new L1Parser(0, "n0nce");
    done.push(oops);
    done.push(`${NESTED_MARKERS.done}\r\n`);
    done.finish();
    expect(done.done).toBe(true);
    expect(l1PanickedEarly(done)).toBe(false);
    const quiet = new L1Parser(0, "n0nce");
    quiet.push(`${NESTED_MARKERS.up} uptime=1.2 cpus=2\r\n`);
    quiet.finish();
    expect(l1PanickedEarly(quiet)).toBe(false);
  });
});

describe("L1Parser (the console protocol of L1's /init)", () => {
  const M = NESTED_MARKERS;
  const stream = [
    "\x1b[2J\x1b[01;01H", `${M.up} uptime=1.20 cpus=1\r\n`,
    `${M.kvm}ok module=kvm-amd uptime=1.9\r\n`,
    `${M.begin}0#n0nce uptime=2.0\r\n`, "Linux version 6.12\r\r\n", "TS-VMM-INIT-", "OK kernel=x\r\n", "no newline at the end",
    // A guest printing an end marker without the nonce does not end its block.
    `\r\n${M.end}0#guess status=0 reason=exit\r\n`,
    `\r\n\r\n${M.end}0#n0nce status=137 reason=marker uptime=9\r\n`,
    `${M.logBegin}0#n0nce\r\n`, "warn: a\r\nwarn: b\r\n\r\n", `${M.logEnd}0#n0nce\r\n`,
    `${M.begin}1#n0nce uptime=10\r\n`, "half a line",
  ];
  it("splits guest blocks, keeps their lines with host times from the step start, and collects stderr", () => {
    const p = new L1Parser(0, "n0nce");
    stream.forEach((chunk, i) => p.push(chunk, 100 * i));
    p.finish(5000);
    expect(p.initMs).toBe(100);
    expect(p.kvmMs).toBe(200);
    const e = p.ends.get(0)!;
    expect(e.status).toBe(137);
    expect(e.reason).toBe("marker");
    expect(e.lines.map((l) => l.text)).toEqual([
      "Linux version 6.12", "TS-VMM-INIT-OK kernel=x", "no newline at the end", `${M.end}0#guess status=0 reason=exit`, "",
    ]);
    expect(e.lines[1]!.tMs).toBe(300); // arrived at 600, step began at 300
    expect(e.log).toBe("warn: a\nwarn: b");
    expect(p.done).toBe(false);
    expect(p.ends.has(1)).toBe(false);
    expect(p.unfinished(1)?.lines.map((l) => l.text)).toEqual(["half a line"]);
  });
  it("reads the L1 CPUs brought online, the anchor's state and L1's modules", () => {
    const ok = new L1Parser(0, "n");
    ok.push(`${M.module}kvm_amd 0xffffffffc04a0000 200704\n${M.module}kvm 0xffffffffc0100000 1400832\n`, 5);
    ok.push(`${M.kvm}ok module=kvm-amd cpus=2 anchor=ok uptime=3.1\n`, 10);
    expect(ok.l1Cpus).toBe(2);
    expect(ok.anchorOk).toBe(true);
    expect(ok.l1Modules).toEqual([
      { name: "kvm_amd", start: 0xffffffffc04a0000n, size: 200704 },
      { name: "kvm", start: 0xffffffffc0100000n, size: 1400832 },
    ]);
    const bad = new L1Parser(0, "n");
    bad.push(`${M.kvm}ok module=kvm-amd cpus=1 anchor=failed uptime=3.1\n`, 10);
    expect(bad.l1Cpus).toBe(1);
    expect(bad.anchorOk).toBe(false);
  });
  it("guestHasL1State: a guest vCPU stopped inside an L1 module is the emulator's fault; elsewhere it is not", () => {
    const run = { l1Modules: [{ name: "kvm_amd", start: 0xffffffffc04a0000n, size: 0x31000 }] };
    const at = (rip: string): { vmmLog: string } => ({ vmmLog: `ts-vmm: stopped by SIGTERM\nts-vmm: vCPU 0: rip=0xffffffff81000000 rflags=0x2\nts-vmm: vCPU 1: rip=${rip} rflags=0x10246` });
    expect(guestHasL1State(run, at("0xffffffffc04c45b0"))).toBe("vCPU 1 of the guest was at 0xffffffffc04c45b0, inside L1's kvm_amd");
    expect(guestHasL1State(run, at("0xffffffffc04d1000"))).toBeNull(); // one past the end
    expect(guestHasL1State(run, at("0xffffffffc049ffff"))).toBeNull();
    expect(guestHasL1State(run, { vmmLog: "" })).toBeNull();
    expect(guestHasL1State({ l1Modules: [] }, at("0xffffffffc04c45b0"))).toBeNull();
  });
  it("guestRanStaleText: an int3 oops whose code dump no longer has the int3 is the emulator's; a real int3 is not", () => {
    // Recorded from a 2-vCPU L2 boot on ours in the nested tier (2026-12-03).
    const seen = [
      "[    1.905866] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
      "[    1.906656] RIP: 0010:sched_clock_cpu+0x9/0x190",
      "[    1.906989] Code: 00 e9 b8 fe ff ff 66 66 2e 0f 1f 84 00 00 00 00 00 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa 41 54 55 53 66 <90> e8 f1 ee f0 ff 48 03 05 22 93 d2 01 48 89 c2 5b 48 89 d0 5d 41",
    ].join("\n");
    expect(guestRanStaleText({ serial: seen })).toMatch(/memory holds 0x66 where the int3 was/);
    // The int3 still in memory (a real breakpoint, or memory the VMM corrupted): not the emulator's.
    expect(guestRanStaleText({ serial: seen.replace("53 66 <90>", "53 cc <90>") })).toBeNull();
    expect(guestRanStaleText({ serial: "[ 1.0] Oops: general protection fault\nCode: 53 66 <90> e8" })).toBeNull();
    expect(guestRanStaleText({ serial: "[ 1.0] Oops: int3: 0000 [#1]\n(no code line)" })).toBeNull();
    expect(guestRanStaleText({ serial: "" })).toBeNull();
  });
  it("L1_KERNEL_FAULT matches L1's own oops (the i440FX machine), not a guest's", () => {
    expect(L1_KERNEL_FAULT.test("[ 33.8] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2\n")).toBe(true);
    expect(L1_KERNEL_FAULT.test("[ 0.1] DMI not present or invalid.\n[ 2.4] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:605\n")).toBe(false);
    expect(L1_KERNEL_FAULT.test("Hardware name: QEMU Standard PC (microvm)")).toBe(false);
  });
  it("sees a missing /dev/kvm and the final marker", () => {
    const p = new L1Parser(0, "n");
    p.push(`${M.up}\n${M.kvm}missing module=kvm-amd\n${M.done}\n`, 10);
    expect(p.kvmMissing).toBe(true);
    expect(p.kvmMs).toBeNull();
    expect(p.done).toBe(true);
  });
});

/** A launcher whose "VMM" is a busybox shell command: exercises L1's job protocol without an L2. */
function shellLauncher(script: string): VmmLauncher {
  return {
    name: "sh",
    provides: [],
    plan: () => ({ kind: "process", file: "busybox", args: ["sh", "-c", script], guestExitValue: (c) => c }),
  };
}

describeWith({ tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "cpio", "zstd", "xz", "ldd", "busybox"] }, "runNested in a real L1 (no L2: shell commands as the VMM)", () => {
  it("reports exit status and stderr, kills at the timeout and at the stop marker, and has /dev/kvm", async () => {
    // The "kernel" is only carried into L1 (a stable file, so its cached layer is reused).
    const dummy = join(import.meta.dirname, "helpers.ts");
    const run = await runNested({
      guests: [
        { name: "exit3", vmm: shellLauncher("echo out-1; echo err-1 >&2; printf tail; exit 3"), kernel: dummy, timeoutMs: 20_000 },
        { name: "hang", vmm: shellLauncher("echo started; sleep 600"), kernel: dummy, timeoutMs: 2_000 },
        // Ignores the SIGTERM sent at the timeout: SIGKILL follows 5 s later.
        { name: "deaf", vmm: shellLauncher("trap '' TERM; echo deaf; sleep 600"), kernel: dummy, timeoutMs: 2_000 },
        { name: "stop", vmm: shellLauncher("echo a; echo STOP-HERE now; sleep 600"), kernel: dummy, stopOnSerial: "STOP-HERE", timeoutMs: 20_000 },
        { name: "kvm", vmm: shellLauncher("ls -l /dev/kvm; grep -c svm /proc/cpuinfo"), kernel: dummy, timeoutMs: 20_000 },
      ],
    });
    expect(run.problem, run.l1Serial.slice(-2000) + run.l1Log).toBeNull();
    const [a, b, deaf, c, d] = run.guests;
    // The status alone decodes as 3, but the "guest" printed no RESULT exit= line: no verdict (runGuest's rule).
    expect(a).toMatchObject({ end: "exit", status: 3, vmmExitValue: 3, guestExit: null, exitCode: null, vmmLog: "err-1" });
    expect(a!.lines.map((l) => l.text)).toEqual(["out-1", "tail"]);
    // At the timeout the VMM gets SIGTERM (status 128+15)...
    expect(b).toMatchObject({ end: "timeout", status: 143, timedOut: true, exitCode: null });
    expect(b!.serial).toBe("started");
    expect(b!.wallMs).toBeGreaterThanOrEqual(1500);
    // ...and SIGKILL 5 s later if it is still there.
    expect(deaf).toMatchObject({ end: "timeout", status: 137, timedOut: true });
    expect(deaf!.serial).toBe("deaf");
    expect(deaf!.wallMs).toBeGreaterThanOrEqual(6500);
    expect(c).toMatchObject({ end: "marker", stoppedOnSerial: true });
    expect(c!.wallMs).toBeLessThan(15_000);
    expect(d).toMatchObject({ end: "exit", status: 0 });
    expect(d!.serial).toMatch(/^c.* \/dev\/kvm/m);
    expect(run.image.layers).toEqual(["base", "exe-busybox", expect.stringMatching(/^l2-[0-9a-f]{8}$/), "job"]);
    console.log(`[nested] L1 /init after ${((run.l1InitMs ?? NaN) / 1000).toFixed(1)} s, /dev/kvm after ${((run.l1KvmMs ?? NaN) / 1000).toFixed(1)} s, whole run ${(run.wallMs / 1000).toFixed(1)} s`);
  }, 180_000);
});
