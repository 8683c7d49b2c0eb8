// vCPU worker threads started ahead of need. A worker's start (a new V8
// isolate, then loading the devices and kvm-ioctls) is the longest step
// between process start and the first KVM_RUN after the CLI's own module
// loading; started first thing, it runs while the main thread loads its
// modules, reads the kernel and sets up the VM. This module imports nothing
// heavy, so the CLI's entry can call it before anything else loads.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

const CACHED_WORKER_URL = new URL("../dist/vcpu-worker.entry.cjs", import.meta.url);
const BUNDLED_WORKER_URL = new URL("../dist/vcpu-worker.bundle.js", import.meta.url);

/**
 * The vCPU worker's compiled entry: dist/ holds it whether this module runs
 * from src/ or dist/ — the CommonJS entry that runs the worker's bundle with a
 * code cache (vcpu-worker-entry.ts) where the build made both, else the ES
 * module bundle (scripts/bundle.mjs), else the plain module.
 */
export const VCPU_WORKER_URL =
  existsSync(fileURLToPath(CACHED_WORKER_URL)) && existsSync(fileURLToPath(new URL("../dist/vcpu-worker.run.cjs", import.meta.url)))
    ? CACHED_WORKER_URL
    : existsSync(fileURLToPath(BUNDLED_WORKER_URL))
      ? BUNDLED_WORKER_URL
      : new URL("../dist/vcpu-worker.js", import.meta.url);

/** workerData of a worker started ahead of need: it waits for a {@link VcpuWorkerStart} message. */
export interface VcpuWorkerPrestart {
  readonly prestart: true;
  /**
   * The worker's first message is a {@link VcpuWorkerBundle} (before it loads its bundle),
   * then the {@link VcpuWorkerStart}.
   */
  readonly bundleFromParent?: boolean;
}

/**
 * The first message of a worker prestarted with `bundleFromParent`: its CommonJS bundle's
 * bytes and cache header (code-cache.ts), read and hashed by the main thread, or nulls (the
 * worker then reads and hashes the file itself).
 */
export interface VcpuWorkerBundle {
  readonly type: "bundle";
  readonly bytes: SharedArrayBuffer | null;
  /** `cacheHeader` (code-cache.ts) of the bytes, as latin1. */
  readonly header: string | null;
}

/** Options of {@link prestartVcpuWorkers}. */
export interface PrestartOptions {
  /**
   * The caller will hand the workers their bundle with `handWorkersTheirBundle` (worker-pool.ts) (the
   * `ts-vmm` binary, which hashes it on its main thread anyway): they wait for it instead of
   * loading node:crypto themselves. A worker taken before that gets a "read it yourself".
   */
  readonly bundleFromParent?: boolean;
}

/** The message that hands a prestarted worker its vCPU. */
export interface VcpuWorkerStart<T> {
  readonly type: "start";
  readonly data: T;
}

/** Most workers {@link prestartVcpuWorkers} keeps. */
export const MAX_PRESTARTED = 16;

// One pool per process even if this module is loaded twice (bin.js loads it
// before the CLI bundle, which has its own copy): the list lives on globalThis.
const POOL = Symbol.for("@ts-vmm/vmm-reference/vcpu-worker-pool");
const idle: Worker[] = ((globalThis as Record<symbol, unknown>)[POOL] ??= []) as Worker[];
/** Prestarted workers still waiting for their {@link VcpuWorkerBundle} (same sharing as `idle`). */
const AWAITING = Symbol.for("@ts-vmm/vmm-reference/vcpu-workers-awaiting-bundle");
const awaitingBundle: Set<Worker> = ((globalThis as Record<symbol, unknown>)[AWAITING] ??= new Set<Worker>()) as Set<Worker>;

/** Where the worker's CommonJS bundle is when {@link VCPU_WORKER_URL} is its cached entry, else null. */
export const VCPU_WORKER_BUNDLE: string | null =
  VCPU_WORKER_URL === CACHED_WORKER_URL ? fileURLToPath(new URL("../dist/vcpu-worker.run.cjs", import.meta.url)) : null;

function sendBundle(w: Worker, bytes: SharedArrayBuffer | null, header: string | null): void {
  if (!awaitingBundle.delete(w)) return;
  w.postMessage({ type: "bundle", bytes, header } satisfies VcpuWorkerBundle);
}

/**
 * Hands every prestarted worker that waits for it (`bundleFromParent`) its bundle:
 * `read()` gives the bytes of {@link VCPU_WORKER_BUNDLE} and their cache header, or null
 * (or throws), and the workers then read it themselves. One shared copy of the bytes.
 */
export function handWorkersTheirBundle(read: () => { readonly bytes: Uint8Array; readonly header: Buffer } | null): void {
  if (awaitingBundle.size === 0) return;
  let got: { readonly bytes: Uint8Array; readonly header: Buffer } | null = null;
  try {
    got = read();
  } catch {
    // the workers read it themselves
  }
  let shared: SharedArrayBuffer | null = null;
  if (got !== null) {
    shared = new SharedArrayBuffer(got.bytes.byteLength);
    new Uint8Array(shared).set(got.bytes);
  }
  const header = got === null ? null : got.header.toString("latin1");
  for (const w of [...awaitingBundle]) sendBundle(w, shared, header);
}

function spawn(workerData: unknown): Worker {
  // The worker is compiled JS that imports the packages' dist builds: do not
  // inherit flags such as a test runner's --conditions pointing at sources.
  return new Worker(VCPU_WORKER_URL, { workerData, execArgv: [] });
}

/**
 * Starts up to `n` vCPU workers now (at most {@link MAX_PRESTARTED} kept), so
 * that {@link takeVcpuWorker} finds them loaded. They do not keep the process
 * alive while idle; one that fails to start leaves the pool (a later take
 * starts a fresh worker, which reports the failure where it is used).
 */
export function prestartVcpuWorkers(n: number, options: PrestartOptions = {}): void {
  const want = Math.min(Math.max(0, Math.floor(n)), MAX_PRESTARTED - idle.length);
  // Only the cached entry (vcpu-worker-entry.ts) reads a bundle message.
  const fromParent = options.bundleFromParent === true && VCPU_WORKER_BUNDLE !== null;
  for (let i = 0; i < want; i++) {
    const w = spawn({ prestart: true, ...(fromParent ? { bundleFromParent: true } : {}) } satisfies VcpuWorkerPrestart);
    w.unref();
    if (fromParent) awaitingBundle.add(w);
    const leave = (): void => {
      const at = idle.indexOf(w);
      if (at >= 0) idle.splice(at, 1);
      awaitingBundle.delete(w);
    };
    w.once("error", leave);
    w.once("exit", leave);
    idle.push(w);
  }
}

/**
 * How many workers the `ts-vmm` binary prestarts for `argv` (without the
 * node and script paths): `--vcpus N` / `--vcpus=N` of `run`; anything it
 * cannot read (or `--config`) counts as 1; other commands 0.
 */
export function prestartCount(argv: readonly string[]): number {
  if (argv[0] !== "run") return 0;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const v = a === "--vcpus" ? argv[i + 1] : a.startsWith("--vcpus=") ? a.slice(8) : undefined;
    if (v !== undefined) return /^\d{1,4}$/.test(v) ? Math.max(1, Number(v)) : 1;
  }
  return 1;
}

/** Workers prestarted and not yet taken. */
export function prestartedVcpuWorkers(): number {
  return idle.length;
}

/**
 * A worker running the vCPU loop with `data`: a prestarted one if any (it gets
 * `data` in a message), else a new one (with `data` as workerData).
 */
export function takeVcpuWorker<T>(data: T): Worker {
  const w = idle.shift();
  if (w === undefined) return spawn(data);
  w.removeAllListeners("error");
  w.removeAllListeners("exit");
  w.ref();
  sendBundle(w, null, null); // still waiting for its bundle (not handed yet): it reads it itself
  w.postMessage({ type: "start", data } satisfies VcpuWorkerStart<T>);
  return w;
}

/** Ends the idle prestarted workers (for tests and embedders that prestarted and will not run). */
export async function closePrestartedVcpuWorkers(): Promise<void> {
  const ws = idle.splice(0);
  for (const w of ws) awaitingBundle.delete(w);
  await Promise.all(ws.map((w) => w.terminate()));
}
