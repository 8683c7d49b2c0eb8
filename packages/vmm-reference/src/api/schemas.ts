// The request bodies of the API, as Firecracker's swagger (firecracker.yaml)
// describes them: its field names, required fields and enums, every object
// strict (an unknown field is refused, as Firecracker's serde
// `deny_unknown_fields` does). ts-vmm's additions are marked. Zod 4 strict
// objects (DESIGN.md says why zod).
import { z } from "zod";

/** Largest integer any field takes (JSON numbers above it are not exact). */
const U64 = Number.MAX_SAFE_INTEGER;
const uint = (max = U64): z.ZodNumber => z.number().int().min(0).max(max);

/** A token bucket: `size` tokens refilled over `refill_time` ms, plus a one-time burst. */
export const TokenBucketSchema = z.strictObject({
  size: uint(),
  one_time_burst: uint().optional(),
  refill_time: uint(),
});

/** Independent bytes/s (`bandwidth`) and ops/s (`ops`) buckets. */
export const RateLimiterSchema = z.strictObject({
  bandwidth: TokenBucketSchema.optional(),
  ops: TokenBucketSchema.optional(),
});

/** Firecracker's CPU template names, and ts-vmm's built-in ones (`host`, `baseline`). */
export const CPU_TEMPLATES = ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None", "host", "baseline"] as const;

/** `PUT /machine-config` (and GET's answer); PATCH takes the same fields, all optional. */
export const MachineConfigSchema = z.strictObject({
  vcpu_count: uint(),
  mem_size_mib: uint(),
  smt: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  cpu_template: z.enum(CPU_TEMPLATES).optional(),
  /** Firecracker's "None", "Transparent", "2M"; ts-vmm's "1G" (and "THP", as the JSON config spells it). */
  huge_pages: z.enum(["None", "Transparent", "2M", "1G", "THP"]).optional(),
  /** ts-vmm: the guest memory backend. */
  mem_backend: z.enum(["memfd", "guest_memfd", "file"]).optional(),
  /** ts-vmm: the file of `mem_backend: "file"`. */
  mem_file_path: z.string().optional(),
  /** ts-vmm: MAP_SHARED or MAP_PRIVATE. */
  mem_shared: z.boolean().optional(),
  /** ts-vmm: fault all of guest memory in before the guest runs. */
  mem_prefault: z.boolean().optional(),
});
/** `PATCH /machine-config`. */
export const MachineConfigPatchSchema = MachineConfigSchema.partial();

/** `PUT /boot-source`. */
export const BootSourceSchema = z.strictObject({
  kernel_image_path: z.string(),
  boot_args: z.string().optional(),
  initrd_path: z.string().optional(),
});

/** `PUT /drives/{drive_id}`. */
export const DriveSchema = z.strictObject({
  drive_id: z.string(),
  is_root_device: z.boolean(),
  partuuid: z.string().optional(),
  cache_type: z.enum(["Unsafe", "Writeback"]).optional(),
  is_read_only: z.boolean().optional(),
  path_on_host: z.string().optional(),
  rate_limiter: RateLimiterSchema.optional(),
  io_engine: z.enum(["Sync", "Async"]).optional(),
  socket: z.string().optional(),
});

/** `PATCH /drives/{drive_id}`. */
export const PartialDriveSchema = z.strictObject({
  drive_id: z.string(),
  path_on_host: z.string().optional(),
  rate_limiter: RateLimiterSchema.optional(),
});

/** `PUT /network-interfaces/{iface_id}`. */
export const NetworkInterfaceSchema = z.strictObject({
  iface_id: z.string(),
  host_dev_name: z.string(),
  guest_mac: z.string().optional(),
  mtu: z.number().int().min(68).max(65535).optional(),
  rx_rate_limiter: RateLimiterSchema.optional(),
  tx_rate_limiter: RateLimiterSchema.optional(),
});

/** `PATCH /network-interfaces/{iface_id}`. */
export const PartialNetworkInterfaceSchema = z.strictObject({
  iface_id: z.string(),
  rx_rate_limiter: RateLimiterSchema.optional(),
  tx_rate_limiter: RateLimiterSchema.optional(),
});

/** `PUT /vsock`. */
export const VsockSchema = z.strictObject({
  guest_cid: z.number().int().min(3).max(0xffff_fffe),
  uds_path: z.string(),
  vsock_id: z.string().optional(),
});

/** `PUT /entropy`. */
export const EntropySchema = z.strictObject({
  rate_limiter: RateLimiterSchema.optional(),
});

/** `PUT /balloon` (and GET's answer). */
export const BalloonSchema = z.strictObject({
  amount_mib: uint(0xffff_ffff),
  deflate_on_oom: z.boolean(),
  stats_polling_interval_s: uint(0xffff).optional(),
  free_page_hinting: z.boolean().optional(),
  free_page_reporting: z.boolean().optional(),
});

/** `PATCH /balloon`. */
export const BalloonUpdateSchema = z.strictObject({ amount_mib: uint(0xffff_ffff) });

/** `PATCH /balloon/statistics`. */
export const BalloonStatsUpdateSchema = z.strictObject({ stats_polling_interval_s: uint(0xffff) });

/** `PUT /actions`. */
export const ActionSchema = z.strictObject({
  action_type: z.enum(["FlushMetrics", "InstanceStart", "SendCtrlAltDel"]),
});

/** `PATCH /vm`. */
export const VmStateSchema = z.strictObject({ state: z.enum(["Paused", "Resumed"]) });

/** `PUT /snapshot/create`. */
export const SnapshotCreateSchema = z.strictObject({
  mem_file_path: z.string(),
  snapshot_path: z.string(),
  snapshot_type: z.enum(["Full", "Diff"]).optional(),
  /** Deprecated in Firecracker's swagger, still accepted by it. */
  version: z.string().optional(),
});

/** `PUT /snapshot/load`. */
export const SnapshotLoadSchema = z.strictObject({
  snapshot_path: z.string(),
  mem_file_path: z.string().optional(),
  mem_backend: z.strictObject({ backend_type: z.enum(["File", "Uffd"]), backend_path: z.string() }).optional(),
  enable_diff_snapshots: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  resume_vm: z.boolean().optional(),
  network_overrides: z.array(z.strictObject({ iface_id: z.string(), host_dev_name: z.string() })).optional(),
  vsock_override: z.strictObject({ uds_path: z.string() }).optional(),
  clock_realtime: z.boolean().optional(),
});

/** `PUT /metrics`. */
export const MetricsSchema = z.strictObject({ metrics_path: z.string() });

/** A parsed `PUT /machine-config` body. */
export type MachineConfigInput = z.infer<typeof MachineConfigSchema>;
/** A parsed `PATCH /machine-config` body. */
export type MachineConfigPatch = z.infer<typeof MachineConfigPatchSchema>;
/** A parsed `PUT /boot-source` body. */
export type BootSourceInput = z.infer<typeof BootSourceSchema>;
/** A parsed `PUT /drives/{id}` body. */
export type DriveInput = z.infer<typeof DriveSchema>;
/** A parsed `PATCH /drives/{id}` body. */
export type PartialDriveInput = z.infer<typeof PartialDriveSchema>;
/** A parsed `PUT /network-interfaces/{id}` body. */
export type NetworkInterfaceInput = z.infer<typeof NetworkInterfaceSchema>;
/** A parsed `PATCH /network-interfaces/{id}` body. */
export type PartialNetworkInterfaceInput = z.infer<typeof PartialNetworkInterfaceSchema>;
/** A parsed `PUT /vsock` body. */
export type VsockInput = z.infer<typeof VsockSchema>;
/** A parsed `PUT /entropy` body. */
export type EntropyInput = z.infer<typeof EntropySchema>;
/** A parsed `PUT /balloon` body. */
export type BalloonInput = z.infer<typeof BalloonSchema>;
/** A parsed rate limiter (`rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`). */
export type RateLimiterInput = z.infer<typeof RateLimiterSchema>;
/** A parsed `PUT /snapshot/create` body. */
export type SnapshotCreateInput = z.infer<typeof SnapshotCreateSchema>;
/** A parsed `PUT /snapshot/load` body. */
export type SnapshotLoadInput = z.infer<typeof SnapshotLoadSchema>;

/**
 * Checks `body` against `schema`; a failure is one sentence in the shape of
 * Firecracker's serde messages (`unknown field `x`, expected one of …`,
 * `missing field `x``, `invalid type …`), naming the field's path.
 */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): { ok: true; value: T } | { ok: false; message: string } {
  const r = schema.safeParse(body, { reportInput: true });
  if (r.success) return { ok: true, value: r.data };
  return { ok: false, message: describeIssue(r.error.issues[0], schema) };
}

function describeIssue(issue: z.core.$ZodIssue | undefined, schema: z.ZodType): string {
  if (issue === undefined) return "invalid body";
  const at = issue.path.length === 0 ? "" : ` at \`${issue.path.map(String).join(".")}\``;
  switch (issue.code) {
    case "unrecognized_keys": {
      const known = knownKeys(schema, issue.path);
      const list = known.length > 0 ? `, expected one of ${known.map((k) => `\`${k}\``).join(", ")}` : "";
      return `unknown field \`${issue.keys[0] ?? ""}\`${list}${at}`;
    }
    case "invalid_type":
      if (issue.input === undefined && issue.path.length > 0) return `missing field \`${String(issue.path.at(-1))}\``;
      return `invalid type: ${typeName(issue.input)}, expected ${issue.expected}${at}`;
    case "invalid_value":
      return `unknown variant ${JSON.stringify(issue.input)}, expected one of ${issue.values.map((v) => `\`${String(v)}\``).join(", ")}${at}`;
    case "too_small":
    case "too_big":
      return `invalid value: ${JSON.stringify(issue.input)}, ${issue.message.replace(/^Too (small|big): expected number to be /, "expected ")}${at}`;
    default:
      return `${issue.message}${at}`;
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "sequence";
  if (typeof v === "object") return "map";
  if (typeof v === "string") return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (typeof v === "number") return Number.isInteger(v) ? `integer \`${v}\`` : `floating point \`${v}\``;
  return `${typeof v} \`${String(v)}\``;
}

/** The keys of the object schema at `path` inside `schema` (for "expected one of"). */
function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let s: z.ZodType | undefined = schema;
  for (const p of path) {
    s = unwrap(s);
    if (s instanceof z.ZodObject) s = (s.shape as Record<string, z.ZodType>)[String(p)];
    else if (s instanceof z.ZodArray) s = s.element as z.ZodType;
    else return [];
  }
  s = unwrap(s);
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

function unwrap(s: z.ZodType | undefined): z.ZodType | undefined {
  while (s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s;
}
