// The pre-boot configuration the API collects (machine-config, boot-source,
// drives, network interfaces, vsock, entropy, balloon, metrics) and turns into
// a VmConfig on InstanceStart. Bodies arrive here already checked against
// schemas.ts; this file checks what a schema cannot (ranges that depend on
// other fields, files that must exist, one root drive) with Firecracker's
// messages where it has one.
import { statSync } from "node:fs";
import type { RateLimiterConfig, TokenBucketConfig } from "@ts-vmm/virtio-devices";
import type { VirtioDeviceConfig } from "../devices/virtio-manager.js";
import { VmmError } from "../error.js";
import { MAX_VCPUS } from "../machine/layout.js";
import { checkMemoryOptions, MAX_MEMORY_MIB, MIN_MEMORY_MIB, type GuestMemoryOptions, type HugePages } from "../machine/memory-config.js";
import { memoryRequestProblem } from "../machine/memory-plan.js";
import type { VmConfig } from "../vmm.js";
import { ApiFault, NOT_SUPPORTED_PREFIX, type ApiLimiterUpdate } from "./backend.js";
import type {
  BalloonInput,
  BootSourceInput,
  DriveInput,
  EntropyInput,
  MachineConfigInput,
  MachineConfigPatch,
  NetworkInterfaceInput,
  RateLimiterInput,
  VsockInput,
} from "./schemas.js";

/** Firecracker's defaults before any PUT /machine-config: 1 vCPU, 128 MiB. */
const DEFAULT_MACHINE: MachineConfigInput = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: "None" };

const HUGE: Record<NonNullable<MachineConfigInput["huge_pages"]>, HugePages> = { None: "none", Transparent: "thp", THP: "thp", "2M": "2M", "1G": "1G" };

const notSupported = (what: string): ApiFault => new ApiFault(NOT_SUPPORTED_PREFIX + what);

/** A token bucket in our form; Firecracker's size 0 or refill_time 0 is "no bucket". */
function bucket(b: { size: number; refill_time: number; one_time_burst?: number | undefined } | undefined): TokenBucketConfig | undefined {
  if (b === undefined || b.size === 0 || b.refill_time === 0) return undefined;
  return { size: b.size, refillTimeMs: b.refill_time, ...(b.one_time_burst ? { oneTimeBurst: b.one_time_burst } : {}) };
}

/**
 * A rate limiter of a PATCH: a bucket given with size or refill_time 0 is
 * removed (`null`), an absent one left as it is (as Firecracker's update).
 */
export function limiterUpdateOf(r: RateLimiterInput): ApiLimiterUpdate {
  return {
    ...(r.bandwidth !== undefined ? { bandwidth: bucket(r.bandwidth) ?? null } : {}),
    ...(r.ops !== undefined ? { ops: bucket(r.ops) ?? null } : {}),
  };
}

/** A rate limiter in our form, or undefined if it limits nothing. */
export function rateLimiterOf(r: RateLimiterInput | undefined): RateLimiterConfig | undefined {
  const bandwidth = bucket(r?.bandwidth);
  const ops = bucket(r?.ops);
  if (bandwidth === undefined && ops === undefined) return undefined;
  return { ...(bandwidth ? { bandwidth } : {}), ...(ops ? { ops } : {}) };
}

function mustExist(what: string, path: string): void {
  try {
    statSync(path);
  } catch (e) {
    throw new ApiFault(`${what} ${path} cannot be opened: ${(e as Error).message}`);
  }
}

/** The VmConfig of the configuration, and which API id each virtio device has. */
export interface BuiltConfig {
  readonly config: VmConfig;
  /** `drive:<id>`, `net:<id>`, `vsock`, `entropy`, `balloon`, by index in `config.virtio`. */
  readonly deviceIds: readonly string[];
}

/** The configuration built through the pre-boot API calls. */
export class PrebootConfig {
  #machine: MachineConfigInput = { ...DEFAULT_MACHINE };
  #boot: BootSourceInput | undefined;
  readonly #drives = new Map<string, DriveInput>();
  readonly #nets = new Map<string, NetworkInterfaceInput>();
  #vsock: VsockInput | undefined;
  #entropy: EntropyInput | undefined;
  #balloon: BalloonInput | undefined;
  #metricsPath: string | undefined;
  /** A boot-specific resource was configured: a snapshot can no longer be loaded (as Firecracker). */
  #bootPath = false;

  /** True once a boot-specific resource was configured (snapshot/load is then refused). */
  get bootPathConfigured(): boolean {
    return this.#bootPath;
  }

  /** The metrics file of PUT /metrics, if one was given. */
  get metricsPath(): string | undefined {
    return this.#metricsPath;
  }

  /** `machine-config.track_dirty_pages`. */
  get trackDirtyPages(): boolean {
    return this.#machine.track_dirty_pages === true;
  }

  /** vCPUs, template and switches of the machine as configured (for GET /cpu-features). */
  get cpu(): { readonly vcpus: number; readonly template: string } {
    return { vcpus: this.#machine.vcpu_count, template: templateOf(this.#machine.cpu_template) };
  }

  /** PUT /machine-config (all fields; the optional ones back to their defaults) or PATCH (the given ones). */
  setMachineConfig(body: MachineConfigInput | MachineConfigPatch, patch: boolean): void {
    const next: MachineConfigInput = patch
      ? { ...this.#machine, ...stripUndefined(body) }
      : { ...DEFAULT_MACHINE, ...stripUndefined(body as MachineConfigInput) };
    if (next.mem_backend !== "file" && patch && body.mem_backend !== undefined) delete next.mem_file_path;
    checkMachine(next);
    this.#machine = next;
    this.#bootPath = true;
  }

  /** GET /machine-config: every field, defaults written out. */
  machineConfigBody(): Record<string, unknown> {
    const m = this.#machine;
    return {
      vcpu_count: m.vcpu_count,
      mem_size_mib: m.mem_size_mib,
      smt: m.smt ?? false,
      track_dirty_pages: m.track_dirty_pages ?? false,
      huge_pages: m.huge_pages ?? "None",
      ...(m.cpu_template !== undefined ? { cpu_template: m.cpu_template } : {}),
      ...(m.mem_backend !== undefined ? { mem_backend: m.mem_backend } : {}),
      ...(m.mem_file_path !== undefined ? { mem_file_path: m.mem_file_path } : {}),
      ...(m.mem_shared !== undefined ? { mem_shared: m.mem_shared } : {}),
      ...(m.mem_prefault !== undefined ? { mem_prefault: m.mem_prefault } : {}),
    };
  }

  /** PUT /boot-source. */
  setBootSource(b: BootSourceInput): void {
    mustExist("The kernel file", b.kernel_image_path);
    if (b.initrd_path !== undefined) mustExist("The initrd file", b.initrd_path);
    this.#boot = stripUndefined(b);
    this.#bootPath = true;
  }

  /** PUT /drives/{id}: creates or replaces the drive. */
  putDrive(d: DriveInput): void {
    if (d.socket !== undefined) throw notSupported("vhost-user block devices (socket) are not available on this VMM.");
    if (d.path_on_host === undefined) throw new ApiFault("Unable to create the virtio block device: path_on_host is required for a virtio-block drive.");
    if (d.is_read_only === undefined) throw new ApiFault("Unable to create the virtio block device: is_read_only is required for a virtio-block drive.");
    if (d.is_root_device) {
      for (const [id, other] of this.#drives) if (other.is_root_device && id !== d.drive_id) throw new ApiFault("A root block device already exists!");
    }
    if (d.partuuid !== undefined && !/^[0-9A-Za-z-]{1,64}$/.test(d.partuuid)) throw new ApiFault(`partuuid must be letters, digits and dashes, got ${JSON.stringify(d.partuuid)}`);
    mustExist("The drive file", d.path_on_host);
    this.#drives.set(d.drive_id, stripUndefined(d));
    this.#bootPath = true;
  }

  /** Whether a drive with this id was configured. */
  hasDrive(id: string): boolean {
    return this.#drives.has(id);
  }

  /** Whether a network interface with this id was configured. */
  hasNet(id: string): boolean {
    return this.#nets.has(id);
  }

  /** PUT /network-interfaces/{id}: creates or replaces the interface. */
  putNet(n: NetworkInterfaceInput): void {
    if (n.mtu !== undefined) throw notSupported("mtu (VIRTIO_NET_F_MTU) is not offered by this VMM's virtio-net.");
    if (n.guest_mac !== undefined && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(n.guest_mac)) throw new ApiFault(`guest_mac must look like 06:00:ac:10:00:02, got ${JSON.stringify(n.guest_mac)}`);
    if (!/^[^\s/]{1,15}$/.test(n.host_dev_name)) throw new ApiFault(`host_dev_name must be a tap interface name of 1 to 15 characters without spaces or slashes, got ${JSON.stringify(n.host_dev_name)}`);
    for (const [id, other] of this.#nets) {
      if (id === n.iface_id) continue;
      if (other.host_dev_name === n.host_dev_name) throw new ApiFault(`The host device name ${n.host_dev_name} is already in use.`);
      if (n.guest_mac !== undefined && other.guest_mac?.toLowerCase() === n.guest_mac.toLowerCase()) throw new ApiFault(`The MAC address is already in use: ${n.guest_mac}`);
    }
    this.#nets.set(n.iface_id, stripUndefined(n));
    this.#bootPath = true;
  }

  /** PUT /vsock. */
  setVsock(v: VsockInput): void {
    this.#vsock = stripUndefined(v);
    this.#bootPath = true;
  }

  /** PUT /entropy. */
  setEntropy(e: EntropyInput): void {
    if (rateLimiterOf(e.rate_limiter) !== undefined) throw notSupported("a rate limiter on the entropy device is not available on this VMM.");
    this.#entropy = stripUndefined(e);
    this.#bootPath = true;
  }

  /** PUT /balloon. */
  setBalloon(b: BalloonInput): void {
    if (b.free_page_hinting === true) throw notSupported("free page hinting is not available on this VMM's balloon (free_page_reporting is).");
    this.#balloon = stripUndefined(b);
    this.#bootPath = true;
  }

  /** The balloon's configuration (GET /balloon), or undefined without one. */
  get balloon(): BalloonInput | undefined {
    return this.#balloon;
  }

  /** PUT /metrics: once (as Firecracker: "Reinitialization of metrics not allowed."). */
  setMetrics(path: string): void {
    if (this.#metricsPath !== undefined) throw new ApiFault("Reinitialization of metrics not allowed.");
    this.#metricsPath = path;
  }

  /**
   * The VmConfig for InstanceStart: drives first (the root drive as
   * /dev/vda), then network interfaces, vsock, entropy, balloon.
   */
  build(): BuiltConfig {
    const boot = this.#boot;
    if (boot === undefined) throw new ApiFault("Cannot start microvm without kernel configuration.");
    const m = this.#machine;
    if (this.#balloon !== undefined && this.#balloon.amount_mib > m.mem_size_mib) throw new ApiFault("Amount of pages requested is too large.");
    const virtio: VirtioDeviceConfig[] = [];
    const ids: string[] = [];
    const drives = [...this.#drives.values()].sort((a, b) => Number(b.is_root_device) - Number(a.is_root_device));
    let rootArgs = "";
    for (const d of drives) {
      const rateLimiter = rateLimiterOf(d.rate_limiter);
      virtio.push({
        kind: "blk",
        path: d.path_on_host!,
        readOnly: d.is_read_only ?? false,
        engine: d.io_engine === "Async" ? "async" : "sync",
        ...(rateLimiter ? { rateLimiter } : {}),
      });
      ids.push(`drive:${d.drive_id}`);
      if (d.is_root_device) rootArgs = d.partuuid !== undefined ? `root=PARTUUID=${d.partuuid}` : `root=/dev/vda ${d.is_read_only ? "ro" : "rw"}`;
    }
    for (const n of this.#nets.values()) {
      const rx = rateLimiterOf(n.rx_rate_limiter);
      const tx = rateLimiterOf(n.tx_rate_limiter);
      virtio.push({
        kind: "net",
        tap: n.host_dev_name,
        ...(n.guest_mac !== undefined ? { mac: n.guest_mac } : {}),
        ...(rx ? { rxRateLimiter: rx } : {}),
        ...(tx ? { txRateLimiter: tx } : {}),
      });
      ids.push(`net:${n.iface_id}`);
    }
    if (this.#vsock) {
      virtio.push({ kind: "vsock", cid: this.#vsock.guest_cid, udsPath: this.#vsock.uds_path });
      ids.push("vsock");
    }
    if (this.#entropy) {
      virtio.push({ kind: "rng" });
      ids.push("entropy");
    }
    if (this.#balloon) {
      const b = this.#balloon;
      virtio.push({
        kind: "balloon",
        amountMib: b.amount_mib,
        deflateOnOom: b.deflate_on_oom,
        statsIntervalS: b.stats_polling_interval_s ?? 0,
        freePageReporting: b.free_page_reporting ?? false,
      });
      ids.push("balloon");
    }
    const cmdline = [boot.boot_args ?? "", rootArgs].filter((s) => s !== "").join(" ");
    const config: VmConfig = {
      kernel: boot.kernel_image_path,
      ...(boot.initrd_path !== undefined ? { initrd: boot.initrd_path } : {}),
      cmdline,
      memMiB: m.mem_size_mib,
      memory: memoryOf(m),
      vcpus: m.vcpu_count,
      cpuTemplate: templateOf(m.cpu_template),
      virtio,
    };
    return { config, deviceIds: ids };
  }

  /** GET /vm/config: Firecracker's FullVmConfiguration (null for what is not configured). */
  fullConfig(): Record<string, unknown> {
    return {
      balloon: this.#balloon ?? null,
      drives: [...this.#drives.values()],
      "boot-source": this.#boot ?? null,
      "cpu-config": null,
      logger: null,
      "machine-config": this.machineConfigBody(),
      metrics: this.#metricsPath !== undefined ? { metrics_path: this.#metricsPath } : null,
      "mmds-config": null,
      "network-interfaces": [...this.#nets.values()],
      vsock: this.#vsock ?? null,
      entropy: this.#entropy ?? null,
    };
  }
}

function templateOf(t: MachineConfigInput["cpu_template"]): string {
  return t === "baseline" ? "baseline" : "host";
}

function memoryOf(m: MachineConfigInput): GuestMemoryOptions {
  const kind = m.mem_backend;
  return {
    ...(kind === undefined ? {} : { backend: kind === "file" ? { kind, path: m.mem_file_path! } : { kind } }),
    ...(m.huge_pages !== undefined ? { hugePages: HUGE[m.huge_pages] } : {}),
    ...(m.mem_shared !== undefined ? { shared: m.mem_shared } : {}),
    ...(m.mem_prefault !== undefined ? { prefault: m.mem_prefault } : {}),
  };
}

/** The checks of a machine configuration that depend on more than one field. */
function checkMachine(m: MachineConfigInput): void {
  if (m.vcpu_count < 1 || m.vcpu_count > MAX_VCPUS) throw new ApiFault(`The vCPU number is invalid! vcpu_count must be from 1 to ${MAX_VCPUS}, got ${m.vcpu_count}.`);
  if (m.smt === true && m.vcpu_count > 1) {
    if (m.vcpu_count % 2 !== 0) throw new ApiFault("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.");
    throw notSupported("smt: true with more than one vCPU (this VMM gives every vCPU a core of its own).");
  }
  if (m.mem_size_mib < MIN_MEMORY_MIB || m.mem_size_mib > MAX_MEMORY_MIB) throw new ApiFault(`The memory size (MiB) is invalid. mem_size_mib must be from ${MIN_MEMORY_MIB} to ${MAX_MEMORY_MIB}, got ${m.mem_size_mib}.`);
  if (m.cpu_template !== undefined && !["None", "host", "baseline"].includes(m.cpu_template)) {
    throw notSupported(`the CPU template ${m.cpu_template} is not available on this VMM (use None, host or baseline).`);
  }
  if (m.mem_backend === "file" && m.mem_file_path === undefined) throw new ApiFault('mem_backend "file" needs mem_file_path');
  if (m.mem_backend !== "file" && m.mem_file_path !== undefined) throw new ApiFault('mem_file_path needs mem_backend "file"');
  if (m.mem_file_path !== undefined && !m.mem_file_path.startsWith("/")) throw new ApiFault(`mem_file_path must be an absolute path, got ${JSON.stringify(m.mem_file_path)}`);
  try {
    const opts = checkMemoryOptions(memoryOf(m));
    const problem = memoryRequestProblem(m.mem_size_mib, opts);
    if (problem !== undefined) throw new ApiFault(`The machine configuration is invalid: ${problem}`);
  } catch (e) {
    if (e instanceof VmmError) throw new ApiFault(e.message);
    throw e;
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
