/**
 * Real Linux drivers against a VMM's virtio-net, virtio-vsock and
 * virtio-balloon in the nested tier: {@link linuxDeviceTest} gives, from one
 * set of choices, the L2 kernel command-line switches that the kit's /init
 * reads (linux-kit.ts), the devices to attach and the L1-side peers for
 * runNested (nested.ts); {@link linuxDeviceProblems} reads both sides of the
 * run afterwards.
 */
import { randomBytes } from "node:crypto";
import { TestGuestsError } from "./error.js";
import type { DeviceSpec } from "./launcher.js";
import { BALLOON_MARKER, GUEST_NET_ADDRESS, NET_MARKER, VSOCK_MARKER } from "./linux-kit.js";
import type { NestedGuest, NestedGuestRun } from "./nested.js";
import { parsePeerResult, type NestedPeers, type PeerResult } from "./nested-peers.js";

/** Choices of {@link linuxDeviceTest}; each device is off unless given (`true` takes the defaults). */
export interface LinuxDeviceTestOptions {
  /** virtio-net on a tap in L1, ping of L1's 10.0.2.2 and a TCP exchange with a peer there. */
  readonly net?: boolean | { readonly tap?: string; readonly port?: number; readonly guestToHost?: number; readonly hostToGuest?: number };
  /** virtio-vsock: a guest-initiated and a host-initiated stream. */
  readonly vsock?:
    | boolean
    | { readonly cid?: number; readonly hostPort?: number; readonly guestPort?: number; readonly guestToHost?: number; readonly hostToGuest?: number };
  /** virtio-balloon: the guest touches its free memory, then inflates the balloon to `amountMiB`. */
  readonly balloon?: boolean | { readonly amountMiB?: number };
  /** Seed of the byte patterns (default: random). */
  readonly seed?: number;
}

/** The resolved plan of a device test: what goes on the command line, the devices, the L1 peers. */
export interface LinuxDeviceTest {
  /** Words to append to the L2 kernel command line (`tsvmm.net=… tsvmm.vsock=… tsvmm.balloon=…`). */
  readonly cmdline: string;
  /** Devices to attach, in this order: net, vsock, balloon (those chosen). */
  readonly devices: readonly DeviceSpec[];
  /** {@link NestedGuest.peers} for runNested. */
  readonly peers: NestedPeers;
  readonly net: { readonly tap: string; readonly port: number; readonly guestToHost: number; readonly hostToGuest: number; readonly seed: number } | null;
  readonly vsock: {
    readonly cid: number;
    readonly hostPort: number;
    readonly guestPort: number;
    readonly guestToHost: number;
    readonly hostToGuest: number;
    readonly seed: number;
  } | null;
  readonly balloon: { readonly amountMiB: number } | null;
}

/** The tap a device test creates in L1 by default. */
export const DEVICE_TEST_TAP = "tsvmm0";

const VSOCK_LISTEN = `${VSOCK_MARKER} listening`;
const BALLOON_TOUCHED = `${BALLOON_MARKER} touched`;
const BALLOON_INFLATED = `${BALLOON_MARKER} inflated`;

function int(name: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new TestGuestsError("InvalidArgument", `${name} must be an integer in ${lo}..${hi}, got ${v}`);
  return v;
}

function pick<T extends object>(v: boolean | T | undefined): T | null {
  if (v === undefined || v === false) return null;
  return v === true ? ({} as T) : v;
}

/**
 * Plans a device test. Default sizes are chosen so the streams are larger
 * than Linux's default vsock buffer (256 KiB: credit updates must flow) and
 * differ by direction (a crossed direction cannot pass).
 *
 * @throws {@link TestGuestsError} `InvalidArgument` for out-of-range values.
 */
export function linuxDeviceTest(o: LinuxDeviceTestOptions): LinuxDeviceTest {
  const seed = int("seed", o.seed ?? randomBytes(4).readUInt32LE(0), 0, 0xffffffff);
  const n = pick(o.net);
  const v = pick(o.vsock);
  const b = pick(o.balloon);
  const words: string[] = [];
  const devices: DeviceSpec[] = [];
  const peers: { -readonly [K in keyof NestedPeers]: NestedPeers[K] } = {};
  let net: LinuxDeviceTest["net"] = null;
  let vsock: LinuxDeviceTest["vsock"] = null;
  let balloon: LinuxDeviceTest["balloon"] = null;
  if (n) {
    net = {
      tap: n.tap ?? DEVICE_TEST_TAP,
      port: int("net.port", n.port ?? 5201, 1, 65535),
      guestToHost: int("net.guestToHost", n.guestToHost ?? 256 * 1024, 0, 1 << 30),
      hostToGuest: int("net.hostToGuest", n.hostToGuest ?? 384 * 1024, 0, 1 << 30),
      seed,
    };
    words.push(`tsvmm.net=${net.port}:${net.guestToHost}:${net.hostToGuest}:${net.seed}`);
    devices.push({ kind: "net", tap: net.tap });
    peers.tcp = { port: net.port, guestToHost: net.guestToHost, hostToGuest: net.hostToGuest, seed: net.seed };
  }
  if (v) {
    vsock = {
      cid: int("vsock.cid", v.cid ?? 3, 3, 0xfffffffe),
      hostPort: int("vsock.hostPort", v.hostPort ?? 5000, 0, 0xfffffffe),
      guestPort: int("vsock.guestPort", v.guestPort ?? 5001, 0, 0xfffffffe),
      guestToHost: int("vsock.guestToHost", v.guestToHost ?? 512 * 1024, 0, 1 << 30),
      hostToGuest: int("vsock.hostToGuest", v.hostToGuest ?? 320 * 1024, 0, 1 << 30),
      seed: (seed + 2) >>> 0,
    };
    words.push(`tsvmm.vsock=${vsock.hostPort}:${vsock.guestPort}:${vsock.guestToHost}:${vsock.hostToGuest}:${vsock.seed}`);
    devices.push({ kind: "vsock", cid: vsock.cid });
    peers.vsock = {
      hostPort: vsock.hostPort,
      guestPort: vsock.guestPort,
      listenMarker: VSOCK_LISTEN,
      guestToHost: vsock.guestToHost,
      hostToGuest: vsock.hostToGuest,
      seed: vsock.seed,
    };
  }
  if (b) {
    balloon = { amountMiB: int("balloon.amountMiB", b.amountMiB ?? 64, 1, 3071) };
    words.push(`tsvmm.balloon=${balloon.amountMiB}`);
    devices.push({ kind: "balloon", amountMiB: balloon.amountMiB });
    peers.balloon = { touchedMarker: BALLOON_TOUCHED, inflatedMarker: BALLOON_INFLATED };
  }
  return { cmdline: words.join(" "), devices, peers, net, vsock, balloon };
}

/** What a device test's run showed, both sides. */
export interface LinuxDeviceReport {
  readonly net: {
    /** The guest's `TS-VMM-NET if=…` line. */
    readonly line: string | null;
    readonly ping: boolean;
    /** The guest's TCP result and L1's. */
    readonly guest: PeerResult | null;
    readonly host: PeerResult | null;
  } | null;
  readonly vsock: {
    /** The guest's CID as its vsock driver reads it (IOCTL_VM_SOCKETS_GET_LOCAL_CID). */
    readonly cid: number | null;
    readonly g2hGuest: PeerResult | null;
    readonly g2hHost: PeerResult | null;
    readonly h2gGuest: PeerResult | null;
    readonly h2gHost: PeerResult | null;
  } | null;
  readonly balloon: {
    /** MiB the guest wrote and freed before loading virtio_balloon. */
    readonly touchedMiB: number | null;
    /** "inflated" or "timeout" (null: no line). */
    readonly state: string | null;
    /** balloon_inflate pages in /proc/vmstat, and the pages wanted. */
    readonly pages: number | null;
    readonly want: number | null;
    /** The guest's MemTotal before and after (the driver takes ballooned pages out of it). */
    readonly memTotalBeforeKiB: number | null;
    readonly memTotalAfterKiB: number | null;
    /** The VMM process's VmRSS in L1 at the two markers. */
    readonly rssBeforeKiB: number | null;
    readonly rssAfterKiB: number | null;
    /** rssBefore − rssAfter (null if either is missing). */
    readonly rssDropKiB: number | null;
    /** QMP's reply to the target (QEMU only). */
    readonly qmp: PeerResult | null;
  } | null;
}

function line(run: NestedGuestRun, prefix: string): string | null {
  return run.lines.map((l) => l.text.trim()).find((t) => t.startsWith(prefix)) ?? null;
}

function num(text: string | null, key: string): number | null {
  const m = text === null ? null : new RegExp(`\\b${key}=(\\d+)\\b`).exec(text);
  return m ? Number(m[1]) : null;
}

/** Reads a device test's markers (the guest's serial) and the L1 side (peers, RSS samples) of one guest run. */
export function linuxDeviceReport(run: NestedGuestRun, t: LinuxDeviceTest): LinuxDeviceReport {
  const res = (prefix: string): PeerResult | null => {
    const l = line(run, prefix);
    return l === null ? null : parsePeerResult(l);
  };
  let net: LinuxDeviceReport["net"] = null;
  if (t.net) {
    const l = line(run, `${NET_MARKER} if=`);
    net = { line: l, ping: l !== null && /\bping=ok\b/.test(l), guest: res(`${NET_MARKER} tcp `), host: run.peers.tcp ?? null };
  }
  let vsock: LinuxDeviceReport["vsock"] = null;
  if (t.vsock) {
    vsock = {
      cid: num(line(run, `${VSOCK_MARKER} cid=`), "cid"),
      g2hGuest: res(`${VSOCK_MARKER} g2h `),
      g2hHost: run.peers["vsock-g2h"] ?? null,
      h2gGuest: res(`${VSOCK_MARKER} h2g `),
      h2gHost: run.peers["vsock-h2g"] ?? null,
    };
  }
  let balloon: LinuxDeviceReport["balloon"] = null;
  if (t.balloon) {
    const touched = line(run, `${BALLOON_MARKER} touched `);
    const done = line(run, `${BALLOON_MARKER} inflated `) ?? line(run, `${BALLOON_MARKER} timeout `);
    const before = run.balloonRss?.beforeKiB ?? null;
    const after = run.balloonRss?.afterKiB ?? null;
    balloon = {
      touchedMiB: num(touched, "mib"),
      state: done === null ? null : (done.split(/\s+/)[1] ?? null),
      pages: num(done, "pages"),
      want: num(done, "want"),
      memTotalBeforeKiB: num(touched, "memtotal_kb"),
      memTotalAfterKiB: num(done, "memtotal_kb"),
      rssBeforeKiB: before,
      rssAfterKiB: after,
      rssDropKiB: before !== null && after !== null ? before - after : null,
      qmp: run.peers.qmp ?? null,
    };
  }
  return { net, vsock, balloon };
}

/** Options of {@link linuxDeviceProblems}. */
export interface LinuxDeviceCheckOptions {
  /** The VMM's RSS must drop by at least this share of the balloon (default 0.75). */
  readonly minRssDrop?: number;
}

function stream(problems: string[], what: string, r: PeerResult | null, sent: number, received: number): void {
  if (r === null) return void problems.push(`${what}: no result`);
  if (!r.ok) return void problems.push(`${what}: failed (${r.line})`);
  if (r.sent !== sent || r.received !== received) problems.push(`${what}: sent ${r.sent} and received ${r.received} bytes, expected ${sent} and ${received}`);
}

/**
 * Everything that must hold for a device test's guest run; empty when all of
 * it does. net: the guest pinged L1 and the TCP exchange completed with the
 * exact byte counts and patterns on both sides. vsock: the guest's CID is the
 * device's, and both streams (guest-initiated, host-initiated) completed on
 * both sides. balloon: the driver inflated to the target (balloon_inflate),
 * MemTotal fell by at least 90 % of it, and the VMM's VmRSS in L1 fell by at
 * least `minRssDrop` of it between the markers.
 */
export function linuxDeviceProblems(run: NestedGuestRun, t: LinuxDeviceTest, o: LinuxDeviceCheckOptions = {}): string[] {
  const minRssDrop = o.minRssDrop ?? 0.75;
  const r = linuxDeviceReport(run, t);
  const p: string[] = [];
  for (const l of run.side) if (/^tap \S+ failed/.test(l)) p.push(`L1: ${l}`);
  if (t.net && r.net) {
    if (r.net.line === null) p.push(`net: no "${NET_MARKER} if=" line from the guest`);
    else {
      if (!r.net.line.includes(`addr=${GUEST_NET_ADDRESS}/24`)) p.push(`net: ${r.net.line}`);
      if (!r.net.ping) p.push(`net: the guest's ping of 10.0.2.2 failed (${r.net.line})`);
    }
    stream(p, "net: the guest's TCP exchange", r.net.guest, t.net.guestToHost, t.net.hostToGuest);
    stream(p, "net: L1's TCP peer", r.net.host, t.net.hostToGuest, t.net.guestToHost);
  }
  if (t.vsock && r.vsock) {
    if (r.vsock.cid !== t.vsock.cid) p.push(`vsock: the guest's CID is ${r.vsock.cid}, the device's ${t.vsock.cid}`);
    const { guestToHost: g, hostToGuest: h } = t.vsock;
    stream(p, "vsock: the guest's connection to the host (guest side)", r.vsock.g2hGuest, g, h);
    stream(p, "vsock: the guest's connection to the host (L1 side)", r.vsock.g2hHost, h, g);
    stream(p, "vsock: the host's connection to the guest (guest side)", r.vsock.h2gGuest, g, h);
    stream(p, "vsock: the host's connection to the guest (L1 side)", r.vsock.h2gHost, h, g);
  }
  if (t.balloon && r.balloon) {
    const b = r.balloon;
    const wantKiB = t.balloon.amountMiB * 1024;
    if (b.qmp !== null && !b.qmp.ok) p.push(`balloon: QMP refused the target (${b.qmp.line})`);
    if (b.state === null) p.push(`balloon: no "${BALLOON_MARKER} inflated" line from the guest`);
    else if (b.state !== "inflated" || b.pages === null || b.pages < t.balloon.amountMiB * 256) {
      p.push(`balloon: the driver inflated ${b.pages} of ${t.balloon.amountMiB * 256} pages (${b.state})`);
    }
    if (b.memTotalBeforeKiB !== null && b.memTotalAfterKiB !== null && b.memTotalBeforeKiB - b.memTotalAfterKiB < 0.9 * wantKiB) {
      p.push(`balloon: the guest's MemTotal fell by ${b.memTotalBeforeKiB - b.memTotalAfterKiB} KiB, expected about ${wantKiB}`);
    }
    if (b.rssBeforeKiB === null || b.rssAfterKiB === null) p.push(`balloon: L1 has no RSS sample ${b.rssBeforeKiB === null ? "before" : "after"} the inflate (side: ${run.side.join(" | ")})`);
    else if (b.rssDropKiB! < minRssDrop * wantKiB) {
      p.push(`balloon: the VMM's RSS fell by ${b.rssDropKiB} KiB (${b.rssBeforeKiB} → ${b.rssAfterKiB}), less than ${minRssDrop * 100} % of the ${wantKiB} KiB ballooned`);
    }
  }
  return p;
}
