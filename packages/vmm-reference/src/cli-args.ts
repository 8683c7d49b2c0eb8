// Parsing and checking of `ts-vmm` arguments: node:util parseArgs for the
// syntax, then one check per flag that names the flag and the bad value.
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { RateLimiterConfig } from "@ts-vmm/virtio-devices";
import type { VirtioDeviceConfig } from "./devices/virtio-manager.js";
import type { IrqchipMode } from "./vmm.js";
import { readSmallFile } from "./small-file.js";
import { VmmError } from "./error.js";
import { formatMemorySpec, memorySpecFromJson, parseMemorySpec, type GuestMemoryOptions, type MemorySpec } from "./machine/memory-config.js";
import { parseMachineConfig } from "./machine/machine-config.js";

/** The longest delay setTimeout accepts (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
import { MAX_VCPUS } from "./machine/layout.js";

/** Most vCPUs `--vcpus` accepts: the machine's limit (above 254: split irqchip and x2APIC; KVM may allow fewer). */
export { MAX_VCPUS };

/** A usage error: exit status 2, message printed as `ts-vmm: <message>`. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** What `ts-vmm run` was asked to do, checked. */
export interface RunArgs {
  readonly kernel: string;
  readonly initrd?: string | undefined;
  readonly cmdline?: string | undefined;
  readonly memMiB: number;
  /** The guest memory backend from `--memory SIZE,backend=…` (empty: the defaults). */
  readonly memory: GuestMemoryOptions;
  readonly vcpus: number;
  readonly cpuTemplate?: string | undefined;
  readonly cpuFeatures?: string | undefined;
  readonly timeoutS: number;
  /** `--irqchip split|full` (default split). */
  readonly irqchip: IrqchipMode;
  /** `--cmos on|off` (default on): the CMOS RTC on ports 0x70/0x71; off also tells the guest (FADT) there is none. */
  readonly cmos: boolean;
  /** `--metrics`: print Vmm.metrics() as one JSON object on stderr when the VM ends. */
  readonly metrics: boolean;
  /** `--metrics-path PATH`: append a metrics line (NDJSON) every 60 s and at the end. */
  readonly metricsPath?: string | undefined;
  /** virtio-mmio devices from `--disk`, `--net`, `--rng`, `--console` / `--console-socket`, `--balloon`, `--rtc`, `--vsock`, in that order. */
  readonly virtio: VirtioDeviceConfig[];
  /** `--api-sock PATH`: serve the API (runtime calls) on this Unix socket while the VM runs. */
  readonly apiSock?: string | undefined;
  /** `--restore SNAPSHOT,mem=MEMFILE`: continue a snapshotted guest instead of booting (the machine comes from the snapshot). */
  readonly restore?: { readonly snapshotPath: string; readonly memFilePath: string } | undefined;
  /** `--snapshot-on-signal SIGNAL:DIR`: on SIGNAL, pause, write DIR/vm.snap and DIR/vm.mem (Full), resume. */
  readonly snapshotOnSignal?: { readonly signal: NodeJS.Signals; readonly dir: string } | undefined;
}

/** Signals `--snapshot-on-signal` takes. */
const SNAPSHOT_SIGNALS = ["SIGUSR1", "SIGUSR2", "SIGHUP"] as const;

/** `SNAPSHOT,mem=MEMFILE` of `--restore` (or of `flag`, `--snapshot` for `pool`). @throws {@link UsageError} */
export function parseRestore(v: string, flag = "--restore"): { snapshotPath: string; memFilePath: string } {
  const m = /^([^,]+),mem=([^,]+)$/.exec(v);
  if (!m) throw new UsageError(`${flag} takes SNAPSHOT_PATH,mem=MEMORY_FILE, got ${JSON.stringify(v)}`);
  return { snapshotPath: resolve(m[1]!), memFilePath: resolve(m[2]!) };
}

/** `SIGNAL:DIR` of `--snapshot-on-signal`. @throws {@link UsageError} */
export function parseSnapshotOnSignal(v: string): { signal: NodeJS.Signals; dir: string } {
  const at = v.indexOf(":");
  const sig = at < 0 ? "" : v.slice(0, at);
  const dir = at < 0 ? "" : v.slice(at + 1);
  if (!(SNAPSHOT_SIGNALS as readonly string[]).includes(sig) || dir === "") {
    throw new UsageError(`--snapshot-on-signal takes SIGNAL:DIR with SIGNAL one of ${SNAPSHOT_SIGNALS.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return { signal: sig as NodeJS.Signals, dir: resolve(dir) };
}

/** Every option of every subcommand (parseArgs is strict: anything else is an error). */
const OPTIONS = {
  kernel: { type: "string" },
  initrd: { type: "string" },
  cmdline: { type: "string" },
  memory: { type: "string" },
  mem: { type: "string" },
  vcpus: { type: "string" },
  "cpu-template": { type: "string" },
  "cpu-features": { type: "string" },
  config: { type: "string" },
  timeout: { type: "string" },
  disk: { type: "string", multiple: true },
  net: { type: "string", multiple: true },
  rng: { type: "boolean" },
  rtc: { type: "boolean" },
  console: { type: "boolean" },
  "console-socket": { type: "string" },
  irqchip: { type: "string" },
  cmos: { type: "string" },
  restore: { type: "string" },
  "snapshot-on-signal": { type: "string" },
  balloon: { type: "string" },
  vsock: { type: "string" },
  "api-sock": { type: "string" },
  snapshot: { type: "string" },
  size: { type: "string" },
  "max-running": { type: "string" },
  "log-dir": { type: "string" },
  json: { type: "boolean" },
  metrics: { type: "boolean" },
  "metrics-path": { type: "string" },
  all: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** Which options each subcommand takes. */
const ALLOWED: Record<string, readonly string[]> = {
  run: ["kernel", "initrd", "cmdline", "memory", "mem", "vcpus", "cpu-template", "cpu-features", "config", "timeout", "disk", "net", "rng", "console", "console-socket", "balloon", "rtc", "vsock", "irqchip", "cmos", "api-sock", "restore", "snapshot-on-signal", "metrics", "metrics-path"],
  serve: ["api-sock", "timeout"],
  pool: ["snapshot", "size", "max-running", "api-sock", "log-dir"],
  "cpu-features": ["json", "all", "cpu-template", "cpu-features", "vcpus", "config", "irqchip"],
  "host-info": ["json"],
  demo: ["memory", "mem", "vcpus", "cpu-template", "cpu-features", "timeout", "irqchip"],
};

/** One option's raw value: a string, a flag, or the values of a repeatable option (`--disk`). */
export type OptionValue = string | boolean | readonly string[] | undefined;

/** The parsed command line: a subcommand and its raw option values. */
export interface ParsedCommand {
  readonly command: "run" | "demo" | "serve" | "pool" | "cpu-features" | "host-info" | "help" | "version";
  readonly values: Readonly<Record<string, OptionValue>>;
}

/**
 * Splits argv into a subcommand and options.
 * @throws {@link UsageError} for an unknown option or subcommand, a missing value, or an option the subcommand does not take.
 */
export function parseCommand(argv: readonly string[]): ParsedCommand {
  // `--cpu-features -x2apic`: a value that starts with "-" would read as an option; join it.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a === "--cpu-features" && next !== undefined && /^-[a-z0-9]/i.test(next) && !next.startsWith("--")) {
      args.push(`${a}=${next}`);
      i++;
    } else if (a === "--balloon" && (next === undefined || !next.includes("=") || next.startsWith("-"))) {
      // A bare --balloon (its options are key=value pairs; anything else is the next argument).
      args.push("--balloon=");
    } else args.push(a);
  }
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options: OPTIONS });
  } catch (e) {
    const err = e as Error & { code?: string };
    const opt = /'(-[^' ]+)/.exec(err.message)?.[1];
    if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new UsageError(`unknown option ${opt ?? err.message} (ts-vmm --help lists the options)`);
    if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") throw new UsageError(`${opt ?? "an option"} needs a value`);
    if (err.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") throw new UsageError(err.message);
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (values.version) return { command: "version", values };
  if (values.help) return { command: "help", values };
  if (positionals.length === 0) throw new UsageError("missing command: use run, demo, serve, pool, cpu-features or host-info (ts-vmm --help)");
  const cmd = positionals[0]!;
  if (cmd !== "run" && cmd !== "demo" && cmd !== "serve" && cmd !== "pool" && cmd !== "cpu-features" && cmd !== "host-info") throw new UsageError(`unknown command ${JSON.stringify(cmd)}: use run, demo, serve, pool, cpu-features or host-info (ts-vmm --help)`);
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])} after ${cmd}`);
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined && !ALLOWED[cmd]!.includes(k)) throw new UsageError(`${cmd} does not take --${k}`);
  }
  return { command: cmd, values };
}

/** The keys a `--config` file may hold, and the flag each stands for. */
const CONFIG_KEYS: Record<string, string> = {
  kernel: "kernel", initrd: "initrd", cmdline: "cmdline", memory: "memory", vcpus: "vcpus",
  cpuTemplate: "cpu-template", cpuFeatures: "cpu-features", timeout: "timeout", irqchip: "irqchip", machineConfig: "machine-config",
};
const PATH_KEYS = new Set(["kernel", "initrd"]);

/**
 * Reads a `--config` JSON file: an object with the keys `kernel`, `initrd`,
 * `cmdline`, `memory`, `vcpus`, `cpuTemplate`, `cpuFeatures`, `timeout`,
 * `irqchip` (strings or numbers), returned as flag values. `memory` may also be an
 * object (`{ "size": "1G", "backend": "guest_memfd", "hugepages": "2M",
 * "shared": true, "prefault": true }`), and `machineConfig` a Firecracker-style
 * machine configuration (`vcpu_count`, `mem_size_mib`, `huge_pages`, ...; it
 * stands for `vcpus` and `memory`, which it then excludes). Relative
 * `kernel`/`initrd` paths, memory file paths, and a `cpuTemplate` that is a
 * path, are relative to the file. `memory` is not parsed when `overridden`
 * holds it (a flag gives it).
 * @throws {@link UsageError} naming the file and the bad key.
 */
export function readConfigFile(path: string, overridden: ReadonlySet<string> = new Set()): Record<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readSmallFile(path));
  } catch (e) {
    throw new UsageError(`--config ${path}: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new UsageError(`--config ${path}: must be a JSON object`);
  const out: Record<string, string> = {};
  const base = dirname(path);
  for (const [k, v] of Object.entries(json)) {
    const flag = CONFIG_KEYS[k];
    if (!flag) throw new UsageError(`--config ${path}: unknown key ${JSON.stringify(k)} (known: ${Object.keys(CONFIG_KEYS).join(", ")})`);
    if (k === "memory" && overridden.has("memory")) continue; // a flag wins: the file's value is not used, so not parsed
    if (k === "memory" || k === "machineConfig") {
      const spec = usage(() => {
        if (k === "memory") return memorySpecFromJson("memory", v, base);
        if ("memory" in json || "vcpus" in json) throw new VmmError("InvalidConfig", "machineConfig sets vcpus and memory: give either machineConfig or those keys");
        const mc = parseMachineConfig(v, "machineConfig");
        out["vcpus"] = String(mc.vcpus);
        return { memMiB: mc.memMiB, memory: mc.memory };
      }, `--config ${path}: `);
      out["memory"] = usage(() => formatMemorySpec(spec), `--config ${path}: `);
      continue;
    }
    if (typeof v !== "string" && typeof v !== "number") throw new UsageError(`--config ${path}: ${k} must be a string or a number, got ${JSON.stringify(v)}`);
    let s = String(v);
    if (PATH_KEYS.has(k) || (k === "cpuTemplate" && (s.includes("/") || s.endsWith(".json")))) s = resolve(dirname(path), s);
    out[flag] = s;
  }
  return out;
}

/** Runs a memory-config parser, turning its InvalidConfig into a UsageError (`prefix` + its message). */
function usage<T>(fn: () => T, prefix = ""): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof VmmError && e.code === "InvalidConfig") throw new UsageError(prefix + e.message);
    throw e;
  }
}

/**
 * `--memory` without options: the size in MiB (a number of MiB, or with a unit: 512M, 2G, 1T).
 * @throws {@link UsageError} naming the flag and the value.
 */
export function parseMemory(flag: string, v: string): number {
  return usage(() => parseMemorySpec(flag, v)).memMiB;
}

/**
 * `--memory SIZE[,backend=memfd|guest_memfd|file:PATH][,hugepages=2M|1G|thp][,shared=on|off][,prefault=on]`.
 * @throws {@link UsageError} naming the flag, the option and the value.
 */
export function parseMemoryFlag(flag: string, v: string): MemorySpec {
  return usage(() => parseMemorySpec(flag, v));
}

/**
 * `--irqchip`: `split` (the default: local APICs in KVM, the I/O APIC in the
 * VMM) or `full` (KVM_CREATE_IRQCHIP and the in-kernel PIT).
 * @throws {@link UsageError} naming the value.
 */
export function parseIrqchip(v: string | undefined): IrqchipMode {
  if (v === undefined || v === "split") return "split";
  if (v === "full") return "full";
  throw new UsageError(`--irqchip must be split or full, got ${JSON.stringify(v)}`);
}

/**
 * An `on|off` flag; `fallback` when it is not given.
 * @throws {@link UsageError} naming the flag and the value.
 */
export function parseOnOff(flag: string, v: string | undefined, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (v === "on") return true;
  if (v === "off") return false;
  throw new UsageError(`${flag} must be on or off, got ${JSON.stringify(v)}`);
}

/** A whole number in [min, max]. @throws {@link UsageError} naming the flag and value. */
export function parseWhole(flag: string, v: string, min: number, max: number, unit = ""): number {
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be a whole number${unit} from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * `--timeout`: seconds, 0 (none) up to what setTimeout can hold.
 * @throws {@link UsageError}
 */
export function parseTimeout(v: string | undefined): number {
  if (v === undefined) return 0;
  const t = v.trim() === "" ? NaN : Number(v);
  if (!Number.isFinite(t) || t < 0 || t * 1000 > MAX_TIMER_MS) throw new UsageError(`--timeout must be a number of seconds from 0 to ${MAX_TIMER_MS / 1000}, got ${JSON.stringify(v)}`);
  return t;
}

/** Merges `--config` (if any) under the flags: flags win. @throws {@link UsageError} */
export function withConfig(values: Readonly<Record<string, OptionValue>>): Record<string, OptionValue> {
  const path = values["config"];
  const flagged = new Set(Object.keys(values).filter((k) => values[k] !== undefined).map((k) => (k === "mem" ? "memory" : k)));
  const fromFile = typeof path === "string" ? readConfigFile(path, flagged) : {};
  const merged: Record<string, OptionValue> = { ...fromFile };
  for (const [k, v] of Object.entries(values)) if (v !== undefined) merged[k] = v;
  if (typeof values["mem"] === "string" && values["memory"] !== undefined) throw new UsageError("--mem is an alias of --memory: give one of them");
  if (typeof values["mem"] === "string") merged["memory"] = values["mem"];
  return merged;
}

/** Checks the options of `ts-vmm run`. @throws {@link UsageError} */
export function runArgs(values: Readonly<Record<string, OptionValue>>): RunArgs {
  const v = withConfig(values);
  const s = (k: string): string | undefined => (typeof v[k] === "string" ? (v[k] as string) : undefined);
  const snapshotOnSignal = s("snapshot-on-signal") === undefined ? undefined : parseSnapshotOnSignal(s("snapshot-on-signal")!);
  if (s("restore") !== undefined) {
    // The machine (memory, vCPUs, devices, CPU) is the snapshot's: flags that would describe another are refused.
    const machine = ["kernel", "initrd", "cmdline", "memory", "vcpus", "cpu-template", "cpu-features", "irqchip", "cmos", "disk", "net", "rng", "console", "console-socket", "balloon", "rtc", "vsock", "config"];
    const extra = machine.filter((k) => values[k] !== undefined || (k === "memory" && values["mem"] !== undefined));
    if (extra.length > 0) throw new UsageError(`--restore takes the machine from the snapshot: drop ${extra.map((k) => `--${k}`).join(", ")}`);
    return {
      kernel: "", memMiB: 0, memory: {}, vcpus: 0, timeoutS: parseTimeout(s("timeout")), irqchip: "split", cmos: true, virtio: [],
      restore: parseRestore(s("restore")!), snapshotOnSignal, apiSock: s("api-sock"),
      metrics: values["metrics"] === true, metricsPath: metricsPathArg(s("metrics-path")),
    };
  }
  const kernel = s("kernel");
  if (kernel === undefined) throw new UsageError("run needs --kernel PATH (a bzImage or a PVH ELF), or --restore SNAPSHOT,mem=MEMFILE");
  const flagOfMemory = typeof values["mem"] === "string" ? "--mem" : "--memory";
  const memory = s("memory") === undefined ? { memMiB: 256, memory: {} } : parseMemoryFlag(flagOfMemory, s("memory")!);
  return {
    kernel,
    initrd: s("initrd"),
    cmdline: s("cmdline"),
    memMiB: memory.memMiB,
    memory: memory.memory,
    vcpus: s("vcpus") === undefined ? 1 : parseWhole("--vcpus", s("vcpus")!, 1, MAX_VCPUS),
    cpuTemplate: s("cpu-template"),
    cpuFeatures: s("cpu-features"),
    timeoutS: parseTimeout(s("timeout")),
    irqchip: parseIrqchip(s("irqchip")),
    cmos: parseOnOff("--cmos", s("cmos"), true),
    virtio: virtioArgs(v),
    apiSock: s("api-sock"),
    snapshotOnSignal,
    metrics: values["metrics"] === true,
    metricsPath: metricsPathArg(s("metrics-path")),
  };
}

/** `--metrics-path`: a non-empty path. @throws {@link UsageError} */
function metricsPathArg(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (v === "") throw new UsageError("--metrics-path needs a file path");
  return v;
}

/** Rate-limit keys of `--disk` and `--net`: per second, and the one-time bursts. */
const RATE_KEYS = ["bw", "ops", "bw_burst", "ops_burst"] as const;
/** Largest rate or burst accepted (2^40: a terabyte per second is not a limit). */
const MAX_RATE = 2 ** 40;

/**
 * The rate limiter of `bw=BYTES_PER_S,ops=OPS_PER_S[,bw_burst=BYTES][,ops_burst=OPS]`
 * (any subset; buckets of one second's worth, refilled over 1000 ms), or
 * undefined if no key is given.
 * @throws {@link UsageError} naming the flag and the key.
 */
export function rateLimitOf(flag: string, keys: ReadonlyMap<string, string>): RateLimiterConfig | undefined {
  const n = (k: string): number | undefined => {
    const raw = keys.get(k);
    return raw === undefined ? undefined : parseWhole(`${flag} ${k}=`, raw, 1, MAX_RATE);
  };
  const bw = n("bw");
  const ops = n("ops");
  const bwBurst = n("bw_burst");
  const opsBurst = n("ops_burst");
  if (bwBurst !== undefined && bw === undefined) throw new UsageError(`${flag}: bw_burst needs bw`);
  if (opsBurst !== undefined && ops === undefined) throw new UsageError(`${flag}: ops_burst needs ops`);
  if (bw === undefined && ops === undefined) return undefined;
  return {
    ...(bw !== undefined ? { bandwidth: { size: bw, refillTimeMs: 1000, ...(bwBurst !== undefined ? { oneTimeBurst: bwBurst } : {}) } } : {}),
    ...(ops !== undefined ? { ops: { size: ops, refillTimeMs: 1000, ...(opsBurst !== undefined ? { oneTimeBurst: opsBurst } : {}) } } : {}),
  };
}

/** Splits `a=1,b=2,flag` into keys (a bare word maps to ""), refusing repeats and keys not in `allowed`. */
function keyValues(flag: string, parts: readonly string[], allowed: readonly string[], syntax: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of parts) {
    const eq = p.indexOf("=");
    const k = eq < 0 ? p : p.slice(0, eq);
    const val = eq < 0 ? "" : p.slice(eq + 1);
    if (!allowed.includes(k) || (eq < 0) !== (k === "ro")) throw new UsageError(`${flag} takes ${syntax}, got ${JSON.stringify(p)}`);
    if (out.has(k)) throw new UsageError(`${flag}: ${k} given twice`);
    out.set(k, val);
  }
  return out;
}

const DISK_SYNTAX = "PATH[,ro][,poll_us=0..1000][,bw=BYTES_PER_S][,ops=OPS_PER_S][,bw_burst=BYTES][,ops_burst=OPS]";
const NET_SYNTAX = "tap=NAME[,mac=MAC][,bw=BYTES_PER_S][,ops=OPS_PER_S][,bw_burst=BYTES][,ops_burst=OPS]";

/**
 * `--disk PATH[,ro][,poll_us=…][,bw=…]` and `--net tap=NAME[,mac=…][,bw=…]` (both repeatable), `--rng`,
 * `--console` or `--console-socket PATH`, `--balloon`, `--rtc`, `--vsock cid=N,uds=PATH`.
 * @throws {@link UsageError}
 */
export function virtioArgs(v: Readonly<Record<string, OptionValue>>): VirtioDeviceConfig[] {
  const out: VirtioDeviceConfig[] = [];
  const list = (k: string): readonly string[] => {
    const x = v[k];
    return typeof x === "string" ? [x] : Array.isArray(x) ? x : [];
  };
  for (const d of list("disk")) {
    const [path, ...rest] = d.split(",");
    if (path === undefined || path === "") throw new UsageError(`--disk takes ${DISK_SYNTAX}, got ${JSON.stringify(d)}`);
    const keys = keyValues("--disk", rest, ["ro", "poll_us", ...RATE_KEYS], DISK_SYNTAX);
    const rateLimiter = rateLimitOf("--disk", keys);
    const poll = keys.get("poll_us");
    out.push({
      kind: "blk",
      path,
      readOnly: keys.has("ro"),
      ...(rateLimiter !== undefined ? { rateLimiter } : {}),
      ...(poll !== undefined ? { pollMaxUs: parseWhole("--disk poll_us=", poll, 0, 1000) } : {}),
    });
  }
  for (const n of list("net")) {
    const keys = keyValues("--net", n.split(","), ["tap", "mac", ...RATE_KEYS], NET_SYNTAX);
    const tap = keys.get("tap");
    if (tap === undefined || tap === "") throw new UsageError(`--net takes ${NET_SYNTAX}, got ${JSON.stringify(n)}`);
    const mac = keys.get("mac");
    if (mac !== undefined && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new UsageError(`--net mac= must look like 52:54:00:12:34:56, got ${JSON.stringify(mac)}`);
    const rateLimiter = rateLimitOf("--net", keys);
    out.push({ kind: "net", tap, ...(mac !== undefined ? { mac } : {}), ...(rateLimiter !== undefined ? { rateLimiter } : {}) });
  }
  if (v["rng"] === true) out.push({ kind: "rng" });
  const socket = v["console-socket"];
  if (v["console"] === true && socket !== undefined) throw new UsageError("--console and --console-socket are exclusive");
  if (v["console"] === true) out.push({ kind: "console" });
  if (typeof socket === "string") out.push({ kind: "console", socketPath: socket });
  if (typeof v["balloon"] === "string") out.push(parseBalloon(v["balloon"]));
  if (v["rtc"] === true) out.push({ kind: "rtc" });
  const vsock = v["vsock"];
  if (typeof vsock === "string") out.push(parseVsock(vsock));
  return out;
}

/**
 * `--balloon [amount_mib=N][,deflate_on_oom=on][,stats_s=N][,free_page_reporting=on]`
 * (a bare `--balloon` is an empty balloon with none of the options). The amount
 * is checked against the guest's memory when the device is made.
 * @throws {@link UsageError} naming the bad key or value.
 */
export function parseBalloon(v: string): VirtioDeviceConfig {
  const out: { kind: "balloon"; amountMib?: number; deflateOnOom?: boolean; statsIntervalS?: number; freePageReporting?: boolean } = { kind: "balloon" };
  const seen = new Set<string>();
  const onOff = (k: string, x: string): boolean => {
    if (x === "on" || x === "off") return x === "on";
    throw new UsageError(`--balloon ${k} must be on or off, got ${JSON.stringify(x)}`);
  };
  for (const part of v === "" ? [] : v.split(",")) {
    const eq = part.indexOf("=");
    const k = eq < 0 ? part : part.slice(0, eq);
    const x = eq < 0 ? "" : part.slice(eq + 1);
    if (eq < 0) throw new UsageError(`--balloon takes key=value options (amount_mib, deflate_on_oom, stats_s, free_page_reporting), got ${JSON.stringify(part)}`);
    if (seen.has(k)) throw new UsageError(`--balloon ${k} given twice`);
    seen.add(k);
    if (k === "amount_mib") out.amountMib = parseWhole("--balloon amount_mib", x, 0, 1024 * 1024, " of MiB");
    else if (k === "deflate_on_oom") out.deflateOnOom = onOff(k, x);
    else if (k === "stats_s") out.statsIntervalS = parseWhole("--balloon stats_s", x, 0, Math.floor(MAX_TIMER_MS / 1000), " of seconds");
    else if (k === "free_page_reporting") out.freePageReporting = onOff(k, x);
    else throw new UsageError(`--balloon has no option ${JSON.stringify(k)} (amount_mib, deflate_on_oom, stats_s, free_page_reporting)`);
  }
  return out;
}

/**
 * `--vsock cid=N,uds=PATH`: the guest CID (3..4294967294) and the Unix socket
 * host programs connect to (guest connections go to `PATH_<port>`).
 * @throws {@link UsageError} naming the flag and the bad part.
 */
export function parseVsock(v: string): { kind: "vsock"; cid: number; udsPath: string } {
  const fields = new Map<string, string>();
  for (const part of v.split(",")) {
    const eq = part.indexOf("=");
    const k = eq < 0 ? part : part.slice(0, eq);
    if (eq < 0 || (k !== "cid" && k !== "uds") || fields.has(k)) {
      throw new UsageError(`--vsock takes cid=N,uds=PATH, got ${JSON.stringify(v)}`);
    }
    fields.set(k, part.slice(eq + 1));
  }
  const cid = fields.get("cid");
  const uds = fields.get("uds");
  if (cid === undefined || uds === undefined || uds === "") throw new UsageError(`--vsock takes cid=N,uds=PATH, got ${JSON.stringify(v)}`);
  return { kind: "vsock", cid: parseWhole("--vsock cid", cid, 3, 0xffff_fffe), udsPath: uds };
}
