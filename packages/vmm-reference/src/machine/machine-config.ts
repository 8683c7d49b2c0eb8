// The machine configuration in Firecracker's shape (the body of its
// PUT /machine-config), for the control-plane API to come and the JSON config's
// `machineConfig` key today. Firecracker's field names where they apply
// (`vcpu_count`, `mem_size_mib`, `smt`, `track_dirty_pages`, `huge_pages`);
// the backend fields (`mem_backend`, `mem_file_path`, `mem_shared`,
// `mem_prefault`) and the `huge_pages` values "1G" and "THP" are ts-vmm's own.
import { VmmError } from "../error.js";
import { MAX_VCPUS } from "./layout.js";
import { MAX_MEMORY_MIB, MIN_MEMORY_MIB, type GuestMemoryOptions, type HugePages, type MemoryBackend } from "./memory-config.js";

/** Firecracker's `huge_pages` values ("None", "2M") and ours ("1G", "THP"). */
export type MachineHugePages = "None" | "2M" | "1G" | "THP";

/** A machine configuration as JSON (Firecracker's `MachineConfig` body, with ts-vmm's memory fields). */
export interface MachineConfigBody {
  /** vCPUs, 1 to 254. */
  readonly vcpu_count: number;
  /** Guest RAM in MiB, 2 to 1048576. */
  readonly mem_size_mib: number;
  /** Simultaneous multithreading: only false (the machine has one thread per core). */
  readonly smt?: boolean;
  /** Dirty page tracking for snapshots: only false (not implemented yet). */
  readonly track_dirty_pages?: boolean;
  /** Huge pages backing guest memory; default "None". */
  readonly huge_pages?: MachineHugePages;
  /** ts-vmm: the backend, `"memfd"` (default), `"guest_memfd"` or `"file"` (with `mem_file_path`). */
  readonly mem_backend?: "memfd" | "guest_memfd" | "file";
  /** ts-vmm: the file of `mem_backend: "file"`, an absolute path. */
  readonly mem_file_path?: string;
  /** ts-vmm: MAP_SHARED (true) or MAP_PRIVATE; default as {@link GuestMemoryOptions.shared}. */
  readonly mem_shared?: boolean;
  /** ts-vmm: fault all guest memory in before the guest runs. Default false. */
  readonly mem_prefault?: boolean;
}

/** What a machine configuration sets. */
export interface MachineConfig {
  /** vCPU count. */
  readonly vcpus: number;
  /** Guest RAM in MiB. */
  readonly memMiB: number;
  /** The guest memory backend. */
  readonly memory: GuestMemoryOptions;
}

const KEYS = ["vcpu_count", "mem_size_mib", "smt", "track_dirty_pages", "huge_pages", "mem_backend", "mem_file_path", "mem_shared", "mem_prefault"];
const HUGE: Record<MachineHugePages, HugePages> = { None: "none", "2M": "2M", "1G": "1G", THP: "thp" };

/**
 * Checks a machine configuration body. Unknown keys, wrong types and values
 * out of range are refused with one sentence naming the field.
 * @throws {@link VmmError} `InvalidConfig`.
 */
export function parseMachineConfig(body: unknown, what = "machine-config"): MachineConfig {
  const bad = (m: string): VmmError => new VmmError("InvalidConfig", `${what}: ${m}`);
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad(`must be a JSON object, got ${JSON.stringify(body)}`);
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) throw bad(`unknown field ${JSON.stringify(k)} (known: ${KEYS.join(", ")})`);
  const whole = (k: string, min: number, max: number): number => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${k} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string): boolean | undefined => {
    const v = o[k];
    if (v === undefined || typeof v === "boolean") return v;
    throw bad(`${k} must be true or false, got ${JSON.stringify(v)}`);
  };
  const vcpus = whole("vcpu_count", 1, MAX_VCPUS);
  const memMiB = whole("mem_size_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB);
  if (bool("smt") === true) throw bad("smt: true is not supported (every vCPU is a core of its own)");
  if (bool("track_dirty_pages") === true) throw bad("track_dirty_pages: true is not supported yet");
  const h = o["huge_pages"];
  if (h !== undefined && (typeof h !== "string" || !Object.hasOwn(HUGE, h))) throw bad(`huge_pages must be "None", "2M", "1G" or "THP", got ${JSON.stringify(h)}`);
  const kind = o["mem_backend"];
  if (kind !== undefined && kind !== "memfd" && kind !== "guest_memfd" && kind !== "file") throw bad(`mem_backend must be "memfd", "guest_memfd" or "file", got ${JSON.stringify(kind)}`);
  const path = o["mem_file_path"];
  if (path !== undefined && (typeof path !== "string" || !path.startsWith("/"))) throw bad(`mem_file_path must be an absolute path, got ${JSON.stringify(path)}`);
  if (kind === "file" && path === undefined) throw bad('mem_backend "file" needs mem_file_path');
  if (kind !== "file" && path !== undefined) throw bad('mem_file_path needs mem_backend "file"');
  const backend: MemoryBackend | undefined = kind === undefined ? undefined : kind === "file" ? { kind, path: path as string } : { kind };
  const shared = bool("mem_shared");
  const prefault = bool("mem_prefault");
  return {
    vcpus,
    memMiB,
    memory: {
      ...(backend === undefined ? {} : { backend }),
      ...(h === undefined ? {} : { hugePages: HUGE[h as MachineHugePages] }),
      ...(shared === undefined ? {} : { shared }),
      ...(prefault === undefined ? {} : { prefault }),
    },
  };
}

/** The body of a machine configuration (for a GET of it): the defaults are written out. */
export function machineConfigBody(c: MachineConfig): MachineConfigBody {
  const b = c.memory.backend ?? { kind: "memfd" };
  const huge = c.memory.hugePages ?? "none";
  return {
    vcpu_count: c.vcpus,
    mem_size_mib: c.memMiB,
    smt: false,
    track_dirty_pages: false,
    huge_pages: (Object.keys(HUGE) as MachineHugePages[]).find((k) => HUGE[k] === huge)!,
    mem_backend: b.kind,
    ...(b.kind === "file" ? { mem_file_path: b.path } : {}),
    ...(c.memory.shared === undefined ? {} : { mem_shared: c.memory.shared }),
    mem_prefault: c.memory.prefault ?? false,
  };
}
