// Parsing and checking of `ts-vmm` arguments: node:util parseArgs for the
// syntax, then one check per flag that names the flag and the bad value.
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { VirtioDeviceConfig } from "./devices/virtio-manager.js";
import { readSmallFile } from "./small-file.js";
import { VmmError } from "./error.js";
import { formatMemorySpec, memorySpecFromJson, parseMemorySpec, type GuestMemoryOptions, type MemorySpec } from "./machine/memory-config.js";
import { parseMachineConfig } from "./machine/machine-config.js";

/** The longest delay setTimeout accepts (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
import { MAX_VCPUS } from "./machine/layout.js";

/** Most vCPUs `--vcpus` accepts: the machine's limit (APIC ids up to 254; x2APIC ids above that are not wired in yet). */
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
  /** virtio-mmio devices from `--disk`, `--rng`, `--console` / `--console-socket`, in that order. */
  readonly virtio: VirtioDeviceConfig[];
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
  rng: { type: "boolean" },
  console: { type: "boolean" },
  "console-socket": { type: "string" },
  json: { type: "boolean" },
  all: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** Which options each subcommand takes. */
const ALLOWED: Record<string, readonly string[]> = {
  run: ["kernel", "initrd", "cmdline", "memory", "mem", "vcpus", "cpu-template", "cpu-features", "config", "timeout", "disk", "rng", "console", "console-socket"],
  "cpu-features": ["json", "all", "cpu-template", "cpu-features", "vcpus", "config"],
  "host-info": ["json"],
};

/** One option's raw value: a string, a flag, or the values of a repeatable option (`--disk`). */
export type OptionValue = string | boolean | readonly string[] | undefined;

/** The parsed command line: a subcommand and its raw option values. */
export interface ParsedCommand {
  readonly command: "run" | "cpu-features" | "host-info" | "help" | "version";
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
  if (positionals.length === 0) throw new UsageError("missing command: use run, cpu-features or host-info (ts-vmm --help)");
  const cmd = positionals[0]!;
  if (cmd !== "run" && cmd !== "cpu-features" && cmd !== "host-info") throw new UsageError(`unknown command ${JSON.stringify(cmd)}: use run, cpu-features or host-info (ts-vmm --help)`);
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])} after ${cmd}`);
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined && !ALLOWED[cmd]!.includes(k)) throw new UsageError(`${cmd} does not take --${k}`);
  }
  return { command: cmd, values };
}

/** The keys a `--config` file may hold, and the flag each stands for. */
const CONFIG_KEYS: Record<string, string> = {
  kernel: "kernel", initrd: "initrd", cmdline: "cmdline", memory: "memory", vcpus: "vcpus",
  cpuTemplate: "cpu-template", cpuFeatures: "cpu-features", timeout: "timeout", machineConfig: "machine-config",
};
const PATH_KEYS = new Set(["kernel", "initrd"]);

/**
 * Reads a `--config` JSON file: an object with the keys `kernel`, `initrd`,
 * `cmdline`, `memory`, `vcpus`, `cpuTemplate`, `cpuFeatures`, `timeout`
 * (strings or numbers), returned as flag values. `memory` may also be an
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
  const kernel = s("kernel");
  if (kernel === undefined) throw new UsageError("run needs --kernel PATH (a bzImage or a PVH ELF)");
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
    virtio: virtioArgs(v),
  };
}

/** `--disk PATH[,ro]` (repeatable), `--rng`, `--console` or `--console-socket PATH`. @throws {@link UsageError} */
export function virtioArgs(v: Readonly<Record<string, OptionValue>>): VirtioDeviceConfig[] {
  const out: VirtioDeviceConfig[] = [];
  const disks = v["disk"];
  for (const d of typeof disks === "string" ? [disks] : Array.isArray(disks) ? disks : []) {
    const readOnly = d.endsWith(",ro");
    const path = readOnly ? d.slice(0, -3) : d;
    if (path === "" || path.includes(",")) throw new UsageError(`--disk takes PATH or PATH,ro, got ${JSON.stringify(d)}`);
    out.push({ kind: "blk", path, readOnly });
  }
  if (v["rng"] === true) out.push({ kind: "rng" });
  const socket = v["console-socket"];
  if (v["console"] === true && socket !== undefined) throw new UsageError("--console and --console-socket are exclusive");
  if (v["console"] === true) out.push({ kind: "console" });
  if (typeof socket === "string") out.push({ kind: "console", socketPath: socket });
  return out;
}
