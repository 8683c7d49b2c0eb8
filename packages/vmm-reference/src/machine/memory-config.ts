// How guest memory is asked for: the `--memory SIZE[,key=value...]` grammar,
// the JSON config's `memory` value, and the shape the checks run on. Pure:
// no host access here (machine/memory-plan.ts checks the request against the
// host, machine/guest-memory.ts builds it). One sentence per refusal.
import { isAbsolute, resolve } from "node:path";
import { VmmError } from "../error.js";

/** Where guest RAM comes from. */
export type MemoryBackend =
  /** A memfd (default): shared memory with an fd (vhost-user peers, snapshots). With `shared: false`, private anonymous memory. */
  | { readonly kind: "memfd" }
  /** A KVM guest_memfd created with MMAP | INIT_SHARED, mapped for the VMM and registered with KVM_SET_USER_MEMORY_REGION2 (Linux 6.18). */
  | { readonly kind: "guest_memfd" }
  /** A file: shared (guest writes reach it; created or extended as needed) or private (copy-on-write; never changed). */
  | { readonly kind: "file"; readonly path: string };

/** Huge pages: hugetlb pages of 2 MiB or 1 GiB from the host's pools, transparent huge pages, or none. */
export type HugePages = "none" | "2M" | "1G" | "thp";

/** The guest memory backend options (the size is `VmConfig.memMiB`). Every field has a default. */
export interface GuestMemoryOptions {
  /** Default `{ kind: "memfd" }`. */
  readonly backend?: MemoryBackend;
  /** Default `"none"` (4 KiB pages). */
  readonly hugePages?: HugePages;
  /**
   * MAP_SHARED or MAP_PRIVATE. Default: shared, except with `hugePages: "thp"`,
   * where private anonymous memory is the default (the memory THP's `enabled`
   * setting governs; shared memory follows `shmem_enabled`). guest_memfd is
   * always shared.
   */
  readonly shared?: boolean;
  /** Fault all of guest memory in before the guest runs (MAP_POPULATE). Default false. */
  readonly prefault?: boolean;
}

/** Guest RAM size and backend, as `--memory` and the config file give them. */
export interface MemorySpec {
  /** Size in MiB. */
  readonly memMiB: number;
  /** The backend options. */
  readonly memory: GuestMemoryOptions;
}

/** Smallest and largest guest RAM, in MiB. */
export const MIN_MEMORY_MIB = 2;
/** Largest guest RAM, in MiB (1 TiB). */
export const MAX_MEMORY_MIB = 1024 * 1024;

const UNITS: Record<string, number> = { k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024 };

const invalid = (message: string): VmmError => new VmmError("InvalidConfig", message);

/**
 * A memory size: a whole number of MiB, or a number with a binary unit (K, M,
 * G, T; optionally followed by B or iB: 512M, 512MiB, 2G, 1T), from 2 MiB to
 * 1 TiB, in whole MiB. Returns MiB.
 * @throws {@link VmmError} `InvalidConfig`, one sentence naming `what` and the value.
 */
export function parseMemorySize(what: string, text: string): number {
  const m = /^(\d+)\s*(?:([kKmMgGtT])(?:i?[bB])?)?$/.exec(text.trim());
  const mib = m ? Number(m[1]) * (m[2] === undefined ? 1 : UNITS[m[2].toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(mib) || mib < MIN_MEMORY_MIB || mib > MAX_MEMORY_MIB) {
    throw invalid(`${what} must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got ${JSON.stringify(text)}`);
  }
  return mib;
}

const KEYS = ["backend", "hugepages", "shared", "prefault"] as const;

/**
 * `SIZE[,backend=memfd|guest_memfd|file:PATH][,hugepages=2M|1G|thp|none][,shared=on|off][,prefault=on|off]`.
 * A relative file PATH is resolved against `baseDir` (default: the current
 * directory). A PATH cannot contain a comma.
 * @throws {@link VmmError} `InvalidConfig`, one sentence naming `what`, the key and the value.
 */
export function parseMemorySpec(what: string, text: string, baseDir?: string): MemorySpec {
  const [size = "", ...opts] = text.split(",");
  const memMiB = parseMemorySize(what, size);
  const seen = new Set<string>();
  let backend: MemoryBackend | undefined;
  let hugePages: HugePages | undefined;
  let shared: boolean | undefined;
  let prefault: boolean | undefined;
  for (const opt of opts) {
    const eq = opt.indexOf("=");
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? "" : opt.slice(eq + 1);
    if (!(KEYS as readonly string[]).includes(key)) {
      throw invalid(`${what}: unknown option ${JSON.stringify(key)} after the size (known: ${KEYS.join(", ")}; a file path cannot contain a comma)`);
    }
    if (seen.has(key)) throw invalid(`${what}: ${key} is given twice`);
    seen.add(key);
    if (key === "backend") backend = parseBackend(what, value, baseDir);
    else if (key === "hugepages") hugePages = parseHugePages(what, value);
    else if (key === "shared") shared = onOff(what, key, value);
    else prefault = onOff(what, key, value);
  }
  return {
    memMiB,
    memory: {
      ...(backend === undefined ? {} : { backend }),
      ...(hugePages === undefined ? {} : { hugePages }),
      ...(shared === undefined ? {} : { shared }),
      ...(prefault === undefined ? {} : { prefault }),
    },
  };
}

function parseBackend(what: string, v: string, baseDir: string | undefined): MemoryBackend {
  if (v === "memfd" || v === "guest_memfd") return { kind: v };
  if (v.startsWith("file:") && v.length > 5) {
    const p = v.slice(5);
    return { kind: "file", path: isAbsolute(p) ? p : resolve(baseDir ?? process.cwd(), p) };
  }
  throw invalid(`${what}: backend must be memfd, guest_memfd or file:PATH, got ${JSON.stringify(v)}`);
}

function parseHugePages(what: string, v: string): HugePages {
  const t = v.toLowerCase();
  if (t === "2m" || t === "1g") return t.toUpperCase() as "2M" | "1G";
  if (t === "thp" || t === "none") return t;
  throw invalid(`${what}: hugepages must be 2M, 1G, thp or none, got ${JSON.stringify(v)}`);
}

function onOff(what: string, key: string, v: string): boolean {
  if (v === "on" || v === "true" || v === "yes") return true;
  if (v === "off" || v === "false" || v === "no") return false;
  throw invalid(`${what}: ${key} must be on or off, got ${JSON.stringify(v)}`);
}

/**
 * The JSON config's `memory`: a number (MiB), a `--memory` string, or an
 * object `{ size, backend, hugepages, shared, prefault }` where `size` is a
 * number (MiB) or a size string, `backend` is `"memfd"`, `"guest_memfd"`,
 * `"file:PATH"` or `{ file: PATH }`, `hugepages` a string, `shared` and
 * `prefault` booleans. Relative file paths resolve against `baseDir`.
 * @throws {@link VmmError} `InvalidConfig`, one sentence naming `what` and the bad field.
 */
export function memorySpecFromJson(what: string, value: unknown, baseDir: string): MemorySpec {
  if (typeof value === "number") return parseMemorySpec(what, String(value), baseDir);
  if (typeof value === "string") return parseMemorySpec(what, value, baseDir);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid(`${what} must be a number of MiB, a string like "1G,hugepages=2M" or an object, got ${JSON.stringify(value)}`);
  }
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!["size", ...KEYS].includes(k)) throw invalid(`${what}: unknown key ${JSON.stringify(k)} (known: size, ${KEYS.join(", ")})`);
  }
  const size = o["size"];
  if (typeof size !== "number" && typeof size !== "string") throw invalid(`${what}.size must be a number of MiB or a size string like "512M", got ${JSON.stringify(size)}`);
  const memMiB = parseMemorySize(`${what}.size`, String(size));
  const b = o["backend"];
  let backend: MemoryBackend | undefined;
  if (typeof b === "string") backend = parseBackend(`${what}.backend`, b, baseDir);
  else if (typeof b === "object" && b !== null && !Array.isArray(b) && typeof (b as { file?: unknown }).file === "string" && Object.keys(b).length === 1) {
    backend = parseBackend(`${what}.backend`, `file:${(b as { file: string }).file}`, baseDir);
  } else if (b !== undefined) throw invalid(`${what}.backend must be "memfd", "guest_memfd", "file:PATH" or { "file": PATH }, got ${JSON.stringify(b)}`);
  const h = o["hugepages"];
  if (h !== undefined && typeof h !== "string") throw invalid(`${what}.hugepages must be "2M", "1G", "thp" or "none", got ${JSON.stringify(h)}`);
  const bool = (k: "shared" | "prefault"): boolean | undefined => {
    const v = o[k];
    if (v === undefined || typeof v === "boolean") return v;
    throw invalid(`${what}.${k} must be true or false, got ${JSON.stringify(v)}`);
  };
  const shared = bool("shared");
  const prefault = bool("prefault");
  return {
    memMiB,
    memory: {
      ...(backend === undefined ? {} : { backend }),
      ...(h === undefined ? {} : { hugePages: parseHugePages(`${what}.hugepages`, h) }),
      ...(shared === undefined ? {} : { shared }),
      ...(prefault === undefined ? {} : { prefault }),
    },
  };
}

/**
 * The `--memory` string of a spec (what {@link parseMemorySpec} reads back to the same spec;
 * defaults are left out).
 * @throws {@link VmmError} `InvalidConfig` for a file path with a comma (the grammar cannot hold it).
 */
export function formatMemorySpec(spec: MemorySpec): string {
  const m = spec.memory;
  const parts = [`${spec.memMiB}M`];
  if (m.backend !== undefined) {
    if (m.backend.kind === "file" && m.backend.path.includes(",")) throw invalid(`the memory file path ${JSON.stringify(m.backend.path)} contains a comma, which --memory cannot hold`);
    parts.push(`backend=${m.backend.kind === "file" ? `file:${m.backend.path}` : m.backend.kind}`);
  }
  if (m.hugePages !== undefined) parts.push(`hugepages=${m.hugePages}`);
  if (m.shared !== undefined) parts.push(`shared=${m.shared ? "on" : "off"}`);
  if (m.prefault !== undefined) parts.push(`prefault=${m.prefault ? "on" : "off"}`);
  return parts.join(",");
}

/**
 * Checks the shape of options handed to `Vmm.create` from code (the parsers
 * above only make valid ones).
 * @throws {@link VmmError} `InvalidConfig` naming the bad field.
 */
export function checkMemoryOptions(o: unknown): GuestMemoryOptions {
  if (o === undefined) return {};
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw invalid(`memory must be an object, got ${JSON.stringify(o)}`);
  const m = o as Record<string, unknown>;
  for (const k of Object.keys(m)) if (!["backend", "hugePages", "shared", "prefault"].includes(k)) throw invalid(`memory: unknown field ${JSON.stringify(k)}`);
  const b = m["backend"] as { kind?: unknown; path?: unknown } | undefined;
  if (b !== undefined) {
    const okKind = typeof b === "object" && b !== null && (b.kind === "memfd" || b.kind === "guest_memfd" || (b.kind === "file" && typeof b.path === "string" && isAbsolute(b.path)));
    if (!okKind) throw invalid(`memory.backend must be { kind: "memfd" }, { kind: "guest_memfd" } or { kind: "file", path: ABSOLUTE_PATH }, got ${JSON.stringify(b)}`);
  }
  const h = m["hugePages"];
  if (h !== undefined && h !== "none" && h !== "2M" && h !== "1G" && h !== "thp") throw invalid(`memory.hugePages must be "none", "2M", "1G" or "thp", got ${JSON.stringify(h)}`);
  for (const k of ["shared", "prefault"]) {
    if (m[k] !== undefined && typeof m[k] !== "boolean") throw invalid(`memory.${k} must be a boolean, got ${JSON.stringify(m[k])}`);
  }
  return m as GuestMemoryOptions;
}
