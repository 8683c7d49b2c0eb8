import { describe, expect, it } from "vitest";
import {
  linuxDeviceProblems,
  linuxDeviceReport,
  linuxDeviceTest,
  parsePeerResult,
  type NestedGuestRun,
  type NestedPeerName,
  type PeerResult,
} from "../src/index.js";

/*
 * The device test's plan and its verdict, on recorded lines: a run that
 * passes (the shape of QEMU's run in L1, 2026-12-02) and each way one side
 * can be wrong.
 */
const t = linuxDeviceTest({ net: true, vsock: true, balloon: { amountMiB: 64 }, seed: 1000 });

describe("linuxDeviceTest", () => {
  it("puts one switch per device on the command line, the devices in order, and matching peers for L1", () => {
    expect(t.cmdline).toBe("tsvmm.net=5201:262144:393216:1000 tsvmm.vsock=5000:5001:524288:327680:1002 tsvmm.balloon=64");
    expect(t.devices).toEqual([{ kind: "net", tap: "tsvmm0" }, { kind: "vsock", cid: 3 }, { kind: "balloon", amountMiB: 64 }]);
    expect(t.peers).toEqual({
      tcp: { port: 5201, guestToHost: 262144, hostToGuest: 393216, seed: 1000 },
      vsock: { hostPort: 5000, guestPort: 5001, listenMarker: "TS-VMM-VSOCK listening", guestToHost: 524288, hostToGuest: 327680, seed: 1002 },
      balloon: { touchedMarker: "TS-VMM-BALLOON touched", inflatedMarker: "TS-VMM-BALLOON inflated" },
    });
  });
  it("leaves out what is not asked for, and refuses out-of-range values", () => {
    const only = linuxDeviceTest({ balloon: true, seed: 1 });
    expect(only.cmdline).toBe("tsvmm.balloon=64");
    expect(only.devices).toEqual([{ kind: "balloon", amountMiB: 64 }]);
    expect(only.peers).toEqual({ balloon: { touchedMarker: "TS-VMM-BALLOON touched", inflatedMarker: "TS-VMM-BALLOON inflated" } });
    expect(linuxDeviceTest({}).cmdline).toBe("");
    expect(() => linuxDeviceTest({ net: { port: 70000 } })).toThrow(/net.port/);
    expect(() => linuxDeviceTest({ vsock: { cid: 2 } })).toThrow(/vsock.cid/);
    expect(() => linuxDeviceTest({ balloon: { amountMiB: 0 } })).toThrow(/amountMiB/);
    expect(() => linuxDeviceTest({ seed: -1 })).toThrow(/seed/);
  });
});

const GOOD_SERIAL = [
  "TS-VMM-INIT-OK kernel=6.12.118+deb12-cloud-amd64 virtio=3",
  "TS-VMM-BALLOON touched mib=154 memtotal_kb=218496",
  "TS-VMM-BALLOON inflated pages=16384 want=16384 memtotal_kb=152960",
  "TS-VMM-NET if=eth0 addr=10.0.2.15/24 ping=ok 3_packets_received",
  "TS-VMM-NET tcp result=ok sent=262144 received=393216",
  "TS-VMM-VSOCK cid=3",
  "TS-VMM-VSOCK listening port=5001",
  "TS-VMM-VSOCK g2h result=ok sent=524288 received=327680",
  "TS-VMM-VSOCK h2g result=ok sent=524288 received=327680 ",
  "TS-VMM-INIT-OK-SHELL",
];
const GOOD_SIDE = [
  "tap tsvmm0 up 10.0.2.2/24",
  "rss before VmRSS:298788 RssAnon:275400 RssFile:16 RssShmem:23372 ",
  "rss after VmRSS:235384 RssAnon:211996 RssFile:16 RssShmem:23372 ",
  "tcp result=ok sent=393216 received=262144",
  "vsock-g2h result=ok sent=327680 received=524288",
  "vsock-h2g result=ok sent=327680 received=524288",
  'qmp result=ok reply={"return":_{}}',
];

function fakeRun(serial: readonly string[], side: readonly string[], rss: { beforeKiB: number | null; afterKiB: number | null } | null = { beforeKiB: 298788, afterKiB: 235384 }): NestedGuestRun {
  const peers: Partial<Record<NestedPeerName, PeerResult>> = {};
  for (const l of side) {
    const [name, ...rest] = l.split(" ");
    if (["tcp", "vsock-g2h", "vsock-h2g", "qmp"].includes(name!)) peers[name as NestedPeerName] = parsePeerResult(rest.join(" "))!;
  }
  const lines = serial.map((text, i) => ({ text, tMs: i * 100 }));
  return {
    name: "g", end: "exit", status: 0, side, peers, balloonRss: rss,
    guestExit: null, exitProblem: null, exitCode: null, vmmExitValue: null, vmmExit: { code: 0, signal: null },
    timedOut: false, stoppedOnSerial: false, harnessProblems: [], containment: "process-group",
    serial: serial.join("\n"), lines, results: { passed: [], failed: [], skipped: [], all: [], values: {} },
    wallMs: 20_000, firstSerialByteMs: 0, vmmLog: "", vmm: "qemu", snapshotted: null,
  };
}

const swap = (xs: readonly string[], from: string, to: string): string[] => xs.map((x) => (x.startsWith(from) ? to : x));

describe("linuxDeviceProblems", () => {
  it("passes the recorded good run and reports its numbers", () => {
    const r = fakeRun(GOOD_SERIAL, GOOD_SIDE);
    expect(linuxDeviceProblems(r, t)).toEqual([]);
    expect(linuxDeviceReport(r, t).balloon).toMatchObject({ touchedMiB: 154, state: "inflated", pages: 16384, rssDropKiB: 63404, memTotalBeforeKiB: 218496, memTotalAfterKiB: 152960 });
  });

  it.each([
    ["a failed ping", swap(GOOD_SERIAL, "TS-VMM-NET if=", "TS-VMM-NET if=eth0 addr=10.0.2.15/24 ping=fail 0_packets_received"), GOOD_SIDE, /ping of 10.0.2.2 failed/],
    ["no net line at all", GOOD_SERIAL.filter((l) => !l.startsWith("TS-VMM-NET")), GOOD_SIDE, /no "TS-VMM-NET if=" line/],
    ["a short TCP stream on the guest", swap(GOOD_SERIAL, "TS-VMM-NET tcp", "TS-VMM-NET tcp result=fail why=eof sent=262144 received=1000"), GOOD_SIDE, /guest's TCP exchange: failed/],
    ["L1's TCP peer never connected", GOOD_SERIAL, swap(GOOD_SIDE, "tcp ", "tcp result=fail why=timeout sent=0 received=0"), /L1's TCP peer: failed/],
    ["the tap could not be made", GOOD_SERIAL, swap(GOOD_SIDE, "tap ", "tap tsvmm0 failed: open /dev/net/tun: No such device"), /L1: tap tsvmm0 failed/],
    ["the directions crossed", swap(GOOD_SERIAL, "TS-VMM-VSOCK g2h", "TS-VMM-VSOCK g2h result=ok sent=327680 received=524288"), GOOD_SIDE, /sent 327680 and received 524288 bytes, expected 524288 and 327680/],
    ["a wrong CID", swap(GOOD_SERIAL, "TS-VMM-VSOCK cid=", "TS-VMM-VSOCK cid=4294967295"), GOOD_SIDE, /the guest's CID is 4294967295, the device's 3/],
    ["no host-initiated connection", swap(GOOD_SERIAL, "TS-VMM-VSOCK h2g", "TS-VMM-VSOCK h2g result=fail why=timeout sent=0 received=0"), GOOD_SIDE.filter((l) => !l.startsWith("vsock-h2g")), /host's connection to the guest \(guest side\): failed[\s\S]*L1 side\): no result/],
    ["a balloon that never reached its target", swap(GOOD_SERIAL, "TS-VMM-BALLOON inflated", "TS-VMM-BALLOON timeout pages=100 want=16384 memtotal_kb=218096"), GOOD_SIDE, /inflated 100 of 16384 pages \(timeout\)[\s\S]*MemTotal fell by 400 KiB/],
    ["QMP refused the target", GOOD_SERIAL, swap(GOOD_SIDE, "qmp ", 'qmp result=fail why=qmp-error reply={"error":_{}}'), /QMP refused the target/],
  ])("reports %s", (_what, serial, side, problem) => {
    const p = linuxDeviceProblems(fakeRun(serial, side), t);
    expect(p.join("\n")).toMatch(problem);
  });

  it("reports an RSS that did not fall (or was not sampled), against the share asked for", () => {
    expect(linuxDeviceProblems(fakeRun(GOOD_SERIAL, GOOD_SIDE, { beforeKiB: 298788, afterKiB: 298000 }), t)).toEqual([
      "balloon: the VMM's RSS fell by 788 KiB (298788 → 298000), less than 75 % of the 65536 KiB ballooned",
    ]);
    expect(linuxDeviceProblems(fakeRun(GOOD_SERIAL, GOOD_SIDE, { beforeKiB: 298788, afterKiB: null }), t)[0]).toMatch(/no RSS sample after the inflate/);
    // 63404 of 65536 KiB fell: enough for 0.75, not for 0.99.
    expect(linuxDeviceProblems(fakeRun(GOOD_SERIAL, GOOD_SIDE), t, { minRssDrop: 0.99 })).toHaveLength(1);
  });
});
