/**
 * The far ends of a nested guest's devices inside L1 (see nested.ts): what a
 * caller asks for ({@link NestedPeers}), what the job script does for one
 * guest (`SidePlan`), and what it reported (peer result lines, RSS samples).
 */
import type { NestedGuestRun } from "./nested.js";

/** One stream exchange: the guest and the host each send a known number of bytes of a seeded pattern (nested/peer.c). */
export interface NestedStream {
  /** Bytes the guest sends, 0..2^30. */
  readonly guestToHost: number;
  /** Bytes the host sends back, 0..2^30. */
  readonly hostToGuest: number;
  /** Seed of the byte pattern, 0..2^32-1 (both sides must use the same). */
  readonly seed: number;
}

/** A TCP peer on L1's side of the tap: listens on {@link NESTED_TAP_HOST}:`port` before the VMM starts and accepts one connection. */
export interface NestedTcpPeer extends NestedStream {
  /** TCP port, 1..65535. */
  readonly port: number;
}

/**
 * The vsock peers in L1. For a VMM with Firecracker's Unix-socket convention
 * (ours): the guest-initiated connection to host port `hostPort` arrives on the
 * socket `<udsPath>_<hostPort>`, where a peer listens from before the VMM
 * starts; the host-initiated one connects to `udsPath` and writes `CONNECT
 * <guestPort>`. For QEMU (vhost-vsock in L1) the same two go through AF_VSOCK
 * in L1 (listen on `hostPort`, connect to the guest's CID). The host connects
 * once the guest printed `listenMarker`. The guest-initiated stream uses
 * `seed`, the host-initiated one `seed + 1` (mod 2^32).
 */
export interface NestedVsockPeer extends NestedStream {
  /** Port on the host (CID 2) that the guest connects to. */
  readonly hostPort: number;
  /** Port the guest listens on for the host's connection. */
  readonly guestPort: number;
  /** Serial text that says the guest listens on `guestPort`. */
  readonly listenMarker: string;
}

/**
 * RSS samples of the VMM process in L1 around a balloon inflate: VmRSS (and
 * its parts) from /proc/<pid>/status when the guest prints `touchedMarker`
 * (its memory touched and freed, the balloon not yet inflated) and
 * `inflatedMarker`. For QEMU the balloon's target is set through QMP right
 * after the first sample (QEMU has no start-time target): guest memory minus
 * the balloon device's `amountMiB`.
 */
export interface NestedBalloonWatch {
  readonly touchedMarker: string;
  readonly inflatedMarker: string;
}

/** The host sides of a guest's devices inside L1 (see {@link NestedGuest.peers}). */
export interface NestedPeers {
  /** Needs a `net` device with a `tap`. */
  readonly tcp?: NestedTcpPeer;
  /** Needs a `vsock` device. */
  readonly vsock?: NestedVsockPeer;
  /** Needs a `balloon` device (with `amountMiB` for QEMU). */
  readonly balloon?: NestedBalloonWatch;
}

/** The names of the L1-side peers in {@link NestedGuestRun.peers}. */
export type NestedPeerName = "tcp" | "vsock-g2h" | "vsock-h2g" | "qmp";

/** One peer's result line (`result=ok sent=N received=M`, `result=fail why=…`), parsed. */
export interface PeerResult {
  /** `result=ok`. */
  readonly ok: boolean;
  /** Bytes this side sent (null for qmp or when the line had none). */
  readonly sent: number | null;
  /** Bytes this side received and checked. */
  readonly received: number | null;
  /** `why=` of a failure (timeout, eof, mismatch@N, connect:…), else null. */
  readonly why: string | null;
  /** The line as printed. */
  readonly line: string;
}

/** Parses a result line of nested/peer.c (null if `text` has no `result=`). */
export function parsePeerResult(text: string): PeerResult | null {
  const m = /\bresult=(ok|fail)\b/.exec(text);
  if (!m) return null;
  const n = (k: string): number | null => {
    const v = new RegExp(`\\b${k}=(\\d+)\\b`).exec(text);
    return v ? Number(v[1]) : null;
  };
  return { ok: m[1] === "ok", sent: n("sent"), received: n("received"), why: /\bwhy=(\S+)/.exec(text)?.[1] ?? null, line: text.trim() };
}

/** L1's address on a guest's tap (a /24; the guest takes another address in 10.0.2.0/24). */
export const NESTED_TAP_HOST = "10.0.2.2";

/** What L1 does beside one guest's VMM (see {@link NestedPeers}). */
export interface SidePlan {
  /** The tap to create before the VMM starts (and delete after), or null. */
  readonly tap: string | null;
  readonly tcp: NestedTcpPeer | null;
  readonly vsock: {
    readonly peer: NestedVsockPeer;
    /** "uds": Firecracker's Unix-socket convention at udsPath; "vhost": AF_VSOCK in L1 (QEMU's vhost-vsock). */
    readonly transport: "uds" | "vhost";
    readonly udsPath: string;
    readonly cid: number;
  } | null;
  readonly balloon: {
    readonly watch: NestedBalloonWatch;
    /** QEMU's QMP socket and the target in bytes (guest memory minus the balloon), set after the first sample. */
    readonly qmp: { readonly path: string; readonly targetBytes: number } | null;
  } | null;
}

/** What L1 did beside one guest's VMM, as {@link NestedGuestRun} reports it. */
export interface NestedSideResults {
  /** One line each: the tap, the peers' results, RSS samples, QMP replies. */
  readonly side: readonly string[];
  /** The L1-side peers' results by name ({@link NestedPeers}); a peer that was started and printed nothing has `ok: false, why: "no-result"`. */
  readonly peers: Readonly<Partial<Record<NestedPeerName, PeerResult>>>;
  /** VmRSS of the VMM process in KiB at the balloon markers (null where the sample failed), or null without {@link NestedPeers.balloon}. */
  readonly balloonRss: { readonly beforeKiB: number | null; readonly afterKiB: number | null } | null;
}

const PEER_NAMES: readonly NestedPeerName[] = ["tcp", "vsock-g2h", "vsock-h2g", "qmp"];

/**
 * Reads a step's side lines (see jobScript): the peers' results by name and
 * the balloon's RSS samples. Exported for unit tests.
 *
 * @internal
 */
export function sideResults(plan: SidePlan, side: readonly string[]): NestedSideResults {
  const peers: Partial<Record<NestedPeerName, PeerResult>> = {};
  for (const line of side) {
    const sp = line.indexOf(" ");
    const name = (sp < 0 ? line : line.slice(0, sp)) as NestedPeerName;
    if (!PEER_NAMES.includes(name) || peers[name]) continue;
    const rest = sp < 0 ? "" : line.slice(sp + 1);
    peers[name] = parsePeerResult(rest) ?? { ok: false, sent: null, received: null, why: "no-result", line: rest.trim() };
  }
  const rss = (label: string): number | null => {
    const l = side.find((x) => x.startsWith(`rss ${label} `) || x === `rss ${label}`);
    const m = l ? /\bVmRSS:(\d+)\b/.exec(l) : null;
    return m ? Number(m[1]) : null;
  };
  return { side, peers, balloonRss: plan.balloon === null ? null : { beforeKiB: rss("before"), afterKiB: rss("after") } };
}

