// The VM's saved state (version 1 of the state inside the snapshot file) and
// the checks a loaded one goes through before anything is built from it. The
// CRC catches corruption; these catch a well-formed file with wrong content
// (hand-edited, or from a ts-vmm that saved something else): each field's
// type and range here, and the devices' and kvm-ioctls' own checks on restore.
import type { LinuxBoot } from "@ts-vmm/linux-loader";
import type { MmioTransportState } from "@ts-vmm/virtio-devices";
import type { CmosState, I8042State, IoapicState, SerialState } from "@ts-vmm/virtio-devices/legacy";
import { VmmError } from "../error.js";
import type { VirtioDeviceConfig } from "../devices/virtio-manager.js";
import type { VcpuSnapshot } from "./vcpu-state.js";

/** One region of guest RAM and where its bytes are in the memory file. */
export interface MemoryRegionSnapshot {
  /** Guest physical address. */
  readonly start: number;
  /** Bytes. */
  readonly size: number;
  /** Offset of the region's bytes in the memory file. */
  readonly fileOffset: number;
}

/** What the memory file holds. */
export interface MemorySnapshot {
  /** `Full`: every page; `Diff`: only `pages` (the rest of the file is holes), to be merged onto the memory file it was taken against. */
  readonly type: "Full" | "Diff";
  readonly regions: readonly MemoryRegionSnapshot[];
  /** Size the memory file must have. */
  readonly fileBytes: number;
  /** Diff only: `[fileOffset, bytes]` runs written. */
  readonly pages?: readonly (readonly [number, number])[];
}

/** The state inside a snapshot file. */
export interface SnapshotState {
  /** Version of this state layout. */
  readonly stateVersion: 1;
  /** Which ts-vmm wrote it (information only). */
  readonly writer: string;
  /** When (ms since the epoch). */
  readonly takenAt: number;
  /** What is needed to build the same machine again. */
  readonly config: {
    readonly memMiB: number;
    readonly vcpus: number;
    readonly irqchip: "split" | "full";
    readonly serialBacklogBytes: number;
    readonly virtio: readonly VirtioDeviceConfig[];
    /** KVM_CAP_X2APIC_API with 32-bit ids was enabled (split irqchip). */
    readonly x2apicIds: boolean;
  };
  readonly memory: MemorySnapshot;
  readonly vcpus: readonly VcpuSnapshot[];
  readonly vm: {
    /** KVM_GET_CLOCK's ns. */
    readonly clock: bigint;
    /** Full irqchip: KVM_GET_IRQCHIP of chips 0, 1, 2 and KVM_GET_PIT2. */
    readonly irqchips?: readonly Uint8Array[];
    readonly pit?: Uint8Array;
    /** Split irqchip: the user-space I/O APIC. */
    readonly ioapic?: IoapicState;
  };
  readonly devices: {
    readonly serial: SerialState;
    readonly i8042: I8042State;
    /** The CMOS RTC, present iff the VM had one (`cmos`; the restored VM has one iff this is here). */
    readonly cmos?: CmosState;
    /** One per virtio device, in `config.virtio` order. */
    readonly virtio: readonly MmioTransportState[];
  };
  /** The boot layout the loader wrote (kept for `Vmm.boot`). */
  readonly boot: LinuxBoot;
}

const bad = (what: string): VmmError => new VmmError("SnapshotInvalid", `the snapshot state is not usable: ${what}`);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
const isUint = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
const isU64 = (v: unknown): v is bigint => typeof v === "bigint" && v >= 0n && v < 1n << 64n;

function checkBigFields(o: unknown, where: string, fields: readonly string[]): void {
  if (!isObj(o)) throw bad(`${where} is not an object`);
  for (const f of fields) if (!isU64(o[f])) throw bad(`${where}.${f} is not a u64`);
}

function checkVcpu(v: unknown, i: number): VcpuSnapshot {
  const w = `vcpus[${i}]`;
  if (!isObj(v)) throw bad(`${w} is not an object`);
  if (v["id"] !== i) throw bad(`${w}.id is not ${i}`);
  if (!Array.isArray(v["cpuid"]) || v["cpuid"].length === 0 || v["cpuid"].length > 256) throw bad(`${w}.cpuid is not a CPUID table`);
  for (const e of v["cpuid"] as unknown[]) {
    if (!isObj(e) || !["function", "index", "flags", "eax", "ebx", "ecx", "edx"].every((k) => isUint(e[k], 0xffff_ffff))) throw bad(`${w}.cpuid has a malformed entry`);
  }
  checkBigFields(v["regs"], `${w}.regs`, ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"]);
  checkBigFields(v["sregs2"], `${w}.sregs2`, ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apicBase", "flags"]);
  if (!(v["xsave"] instanceof Uint8Array)) throw bad(`${w}.xsave is not bytes`);
  if (!(v["lapic"] instanceof Uint8Array) || v["lapic"].byteLength !== 1024) throw bad(`${w}.lapic is not 1024 bytes`);
  if (!Array.isArray(v["xcrs"]) || !(v["xcrs"] as unknown[]).every((x) => isObj(x) && isUint(x["xcr"], 0xffff_ffff) && isU64(x["value"]))) throw bad(`${w}.xcrs is malformed`);
  if (!Array.isArray(v["msrs"]) || !(v["msrs"] as unknown[]).every((m) => isObj(m) && isUint(m["index"], 0xffff_ffff) && isU64(m["data"]))) throw bad(`${w}.msrs is malformed`);
  if (!isObj(v["events"])) throw bad(`${w}.events is not an object`);
  if (!isUint(v["mpState"], 0xffff_ffff)) throw bad(`${w}.mpState is not a u32`);
  checkBigFields(v["debugRegs"], `${w}.debugRegs`, ["dr6", "dr7", "flags"]);
  if (!isUint(v["tscKhz"], 0xffff_ffff)) throw bad(`${w}.tscKhz is not a u32`);
  if (v["guestSsp"] !== undefined && !isU64(v["guestSsp"])) throw bad(`${w}.guestSsp is not a u64`);
  return v as unknown as VcpuSnapshot;
}

/** The virtio device id of each device kind (virtio 1.2, 5). */
const VIRTIO_DEVICE_IDS: Record<VirtioDeviceConfig["kind"], number> = { net: 1, blk: 2, console: 3, rng: 4, balloon: 5, rtc: 17, vsock: 19 };

/** The fields each device kind's configuration may have in a snapshot. */
const DEVICE_FIELDS: Record<VirtioDeviceConfig["kind"], readonly string[]> = {
  blk: ["kind", "path", "readOnly", "engine", "rateLimiter"],
  net: ["kind", "tap", "mac", "rateLimiter", "rxRateLimiter", "txRateLimiter"],
  rng: ["kind"],
  console: ["kind", "socketPath"],
  balloon: ["kind", "amountMib", "deflateOnOom", "statsIntervalS", "freePageReporting"],
  rtc: ["kind"],
  vsock: ["kind", "cid", "udsPath"],
};

/**
 * A device of config.virtio: a known kind with the fields that kind has, each
 * of its type. (The host resources it names — a disk path, a tap, a socket —
 * are opened as named: a snapshot file is trusted as a configuration is.)
 */
function checkVirtioConfig(d: unknown, i: number): void {
  const w = `config.virtio[${i}]`;
  if (!isObj(d) || typeof d["kind"] !== "string") throw bad(`${w} is malformed`);
  const kind = d["kind"];
  if (!Object.hasOwn(DEVICE_FIELDS, kind)) throw bad(`${w} is a ${JSON.stringify(kind)} device, which this ts-vmm does not have`);
  const allowed = DEVICE_FIELDS[kind as VirtioDeviceConfig["kind"]];
  const extra = Object.keys(d).find((k) => !allowed.includes(k));
  if (extra !== undefined) throw bad(`${w} has an unknown field ${JSON.stringify(extra)}`);
  const str = (k: string, optional = false): void => {
    if (optional && d[k] === undefined) return;
    if (typeof d[k] !== "string" || d[k] === "" || (d[k] as string).length > 4096) throw bad(`${w}.${k} is not a non-empty string`);
  };
  const bool = (k: string): void => {
    if (d[k] !== undefined && typeof d[k] !== "boolean") throw bad(`${w}.${k} is not a boolean`);
  };
  const obj = (k: string): void => {
    if (d[k] !== undefined && !isObj(d[k])) throw bad(`${w}.${k} is not an object`);
  };
  const uint = (k: string, max: number): void => {
    if (d[k] !== undefined && !isUint(d[k], max)) throw bad(`${w}.${k} is out of range`);
  };
  switch (kind) {
    case "blk":
      str("path");
      bool("readOnly");
      if (d["engine"] !== undefined && d["engine"] !== "sync" && d["engine"] !== "async") throw bad(`${w}.engine is neither sync nor async`);
      obj("rateLimiter");
      break;
    case "net":
      str("tap");
      if (d["mac"] !== undefined && (typeof d["mac"] !== "string" || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(d["mac"]))) throw bad(`${w}.mac is not a MAC address`);
      obj("rateLimiter");
      obj("rxRateLimiter");
      obj("txRateLimiter");
      break;
    case "console":
      str("socketPath", true);
      break;
    case "balloon":
      uint("amountMib", 1024 * 1024);
      bool("deflateOnOom");
      uint("statsIntervalS", 0xffff_ffff);
      bool("freePageReporting");
      break;
    case "vsock":
      if (!isUint(d["cid"], 0xffff_ffff) || (d["cid"] as number) < 3) throw bad(`${w}.cid is not a guest CID (3 or more)`);
      str("udsPath");
      break;
    default:
      break;
  }
}

/**
 * The loaded state, checked for shape and range.
 * @throws {@link VmmError} `SnapshotInvalid`, naming the first field that is wrong.
 */
export function checkSnapshotState(s: unknown): SnapshotState {
  if (!isObj(s)) throw bad("it is not an object");
  if (s["stateVersion"] !== 1) throw bad(`state version ${JSON.stringify(s["stateVersion"])}, this ts-vmm reads 1`);
  const c = s["config"];
  if (!isObj(c)) throw bad("config is missing");
  if (!isUint(c["memMiB"], 1024 * 1024) || (c["memMiB"] as number) < 2) throw bad("config.memMiB is out of range");
  if (!isUint(c["vcpus"], 1024) || (c["vcpus"] as number) < 1) throw bad("config.vcpus is out of range");
  if (c["irqchip"] !== "split" && c["irqchip"] !== "full") throw bad("config.irqchip is neither split nor full");
  if (!isUint(c["serialBacklogBytes"], 2 ** 30)) throw bad("config.serialBacklogBytes is out of range");
  if (!Array.isArray(c["virtio"])) throw bad("config.virtio is malformed");
  (c["virtio"] as unknown[]).forEach(checkVirtioConfig);
  if (typeof c["x2apicIds"] !== "boolean") throw bad("config.x2apicIds is not a boolean");
  const m = s["memory"];
  if (!isObj(m) || (m["type"] !== "Full" && m["type"] !== "Diff")) throw bad("memory.type is neither Full nor Diff");
  if (!isUint(m["fileBytes"])) throw bad("memory.fileBytes is out of range");
  if (!Array.isArray(m["regions"]) || m["regions"].length === 0) throw bad("memory.regions is empty");
  let total = 0;
  for (const r of m["regions"] as unknown[]) {
    if (!isObj(r) || !isUint(r["start"]) || !isUint(r["size"]) || !isUint(r["fileOffset"])) throw bad("memory.regions has a malformed region");
    if ((r["size"] as number) % 4096 !== 0 || (r["fileOffset"] as number) + (r["size"] as number) > (m["fileBytes"] as number)) throw bad("a memory region does not fit the memory file");
    total += r["size"] as number;
  }
  if (total !== (c["memMiB"] as number) * 1024 * 1024) throw bad(`the memory regions add up to ${total} bytes, config.memMiB says ${(c["memMiB"] as number) * 1024 * 1024}`);
  if (!Array.isArray(s["vcpus"]) || s["vcpus"].length !== c["vcpus"]) throw bad("vcpus does not match config.vcpus");
  (s["vcpus"] as unknown[]).forEach(checkVcpu);
  const vm = s["vm"];
  if (!isObj(vm) || !isU64(vm["clock"])) throw bad("vm.clock is missing");
  if (c["irqchip"] === "full") {
    if (!Array.isArray(vm["irqchips"]) || vm["irqchips"].length !== 3 || !(vm["irqchips"] as unknown[]).every((b) => b instanceof Uint8Array && b.byteLength === 512)) throw bad("vm.irqchips must be 3 chips of 512 bytes");
    if (!(vm["pit"] instanceof Uint8Array)) throw bad("vm.pit is missing");
  } else if (!isObj(vm["ioapic"])) throw bad("vm.ioapic is missing");
  const d = s["devices"];
  if (!isObj(d) || !isObj(d["serial"]) || !isObj(d["i8042"]) || !Array.isArray(d["virtio"])) throw bad("devices is malformed");
  if (d["cmos"] !== undefined && !isObj(d["cmos"])) throw bad("devices.cmos is malformed");
  if ((d["virtio"] as unknown[]).length !== (c["virtio"] as unknown[]).length) throw bad("devices.virtio does not match config.virtio");
  // Each saved transport's device is of the kind its configuration names (checked before any
  // device is built, so a mismatched state opens no host resource).
  (d["virtio"] as unknown[]).forEach((t, i) => {
    const kind = ((c["virtio"] as unknown[])[i] as { kind: VirtioDeviceConfig["kind"] }).kind;
    const dev = isObj(t) ? t["device"] : undefined;
    if (!isObj(dev) || dev["deviceType"] !== VIRTIO_DEVICE_IDS[kind]) throw bad(`devices.virtio[${i}] is not the state of a ${kind} device`);
  });
  if (!isObj(s["boot"])) throw bad("boot is missing");
  return s as unknown as SnapshotState;
}
