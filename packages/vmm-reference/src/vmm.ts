import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { Worker } from "node:worker_threads";
import { release } from "node:os";
import { resolve as resolvePath } from "node:path";
import {
  Cap,
  Kvm,
  KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
  KVM_X2APIC_API_USE_32BIT_IDS,
  type CpuidEntry,
  type IrqRoutingEntry,
  type VcpuFd,
  type VmFd,
} from "@ts-vmm/kvm-ioctls";
import { IOAPIC_ID, loadLinux, ramRegions, type LinuxBoot } from "@ts-vmm/linux-loader";
import type { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { EventFd, ThreadTimer } from "@ts-vmm/vmm-sys-util";
import { normalizeCpuid } from "./cpu/normalize.js";
import { cpuidReadBack, supportedCpuid } from "./cpu/kvm-cpuid-cache.js";
import type { BalloonMetrics, BalloonStats } from "@ts-vmm/virtio-devices";
import {
  BootTimer,
  bootTimerState,
  I8042,
  i8042State,
  CmosRtc,
  cmosState,
  Ioapic,
  IOAPIC_BASE,
  IOAPIC_DEFAULT_PINS,
  IOAPIC_WINDOW,
  Serial16550,
  serialState,
  type BootTimerReport,
  type IoapicRoute,
} from "@ts-vmm/virtio-devices/legacy";
import { SerialOutputRing } from "./devices/serial-output.js";
import { defaultMailboxSpinMs, MMIO_MAILBOX_BYTES, type MmioRequest } from "./devices/mmio-mailbox.js";
import { VirtioManager, type VirtioDeviceConfig } from "./devices/virtio-manager.js";
import { VmmError } from "./error.js";
import { BOOT_MSRS, COM1_IRQ, KBD_IRQ, MAX_VCPUS, MAX_XAPIC_VCPUS, TSS_ADDR } from "./machine/layout.js";
import type { RunResult, StopReason, VcpuEndState } from "./run-result.js";
import type { InterruptConfig } from "./cpu/inhibits.js";
import { applyCpuPolicy, parseFeatureSwitches, type FeatureSwitch } from "./cpu/policy.js";
import { loadCpuTemplate, parseCpuTemplate, type CpuTemplate } from "./cpu/templates.js";
import type { VcpuWorkerMessage } from "./vcpu-worker.js";
import { EarlyHandover, IntrAction, VcpuLoop, type VcpuWorkerData } from "./vcpu-loop.js";
import { absoluteNow, mark } from "./startup-trace.js";
import { prestartedVcpuWorkers, takeVcpuWorker } from "./worker-pool.js";
import { checkMemoryOptions, type GuestMemoryOptions } from "./machine/memory-config.js";
import { readMemoryHostFacts } from "./machine/memory-host.js";
import { memoryRequestProblem, planGuestMemory, type MemoryPlan } from "./machine/memory-plan.js";
import { buildGuestMemory, type BuiltGuestMemory } from "./machine/guest-memory.js";
import { cpuMismatch, cpuidVendor } from "./snapshot/cpu-check.js";
import { restoreVcpu } from "./snapshot/vcpu-state.js";
import type { SnapshotState } from "./snapshot/state.js";
import { ClockRestore, restoreVmState, takeSnapshot } from "./snapshot/take.js";
import { readSnapshotCached } from "./snapshot/state-cache.js";
import { exitCountersBytes, readExitCounters } from "./metrics/exit-counters.js";
import { KvmStatsSource } from "./metrics/kvm-stats.js";
import { collectMetrics, type RunClock } from "./metrics/collect.js";
import type { VmmMetrics } from "./metrics/types.js";

/** KVM's irqchip numbers in routing entries (KVM_IRQCHIP_PIC_MASTER/SLAVE/IOAPIC). */
const IRQCHIP_PIC_MASTER = 0;
const IRQCHIP_IOAPIC = 2;
/** GSIs that also reach the legacy 8259 (the PIT, the i8042, the cascade, COM2/COM1). */
const PIC_GSIS = 5;

/**
 * The GSI routing table: GSI n is IOAPIC pin n (0–23), and only GSIs 0–4 also
 * reach the 8259. KVM's default routes GSIs 0–15 to both; then a virtio
 * device on GSI 5 or above also raised the never-programmed 8259 of a guest
 * that uses only the IOAPIC, whose reset vector base 0 delivered it through
 * LVT0's ExtINT as vector 5 (the micro-guest's fuzz mode died of "trap
 * vector=5"). Linux with our HW-reduced ACPI uses the IOAPIC only.
 */
export function gsiRoutes(): IrqRoutingEntry[] {
  const routes: IrqRoutingEntry[] = [];
  for (let gsi = 0; gsi < 24; gsi++) routes.push({ gsi, type: "irqchip", irqchip: IRQCHIP_IOAPIC, pin: gsi });
  for (let gsi = 0; gsi < PIC_GSIS; gsi++) routes.push({ gsi, type: "irqchip", irqchip: IRQCHIP_PIC_MASTER, pin: gsi });
  return routes;
}

/**
 * The GSI routes of a split irqchip: GSI n is I/O APIC pin n, as an MSI with
 * what the guest programmed into the pin's redirection entry; masked pins have
 * no route, so their irqfds deliver nothing.
 */
export function splitIrqchipRoutes(routes: readonly IoapicRoute[], x2apicIds = false): IrqRoutingEntry[] {
  return routes.map((r) => ({ gsi: r.pin, type: "msi" as const, address: kvmMsiAddress(r.address, x2apicIds), data: r.data }));
}

/**
 * An x86 MSI address as KVM's routing table takes it. The guest's form may
 * carry destination id bits 8–14 in address bits 5–11 (the extended
 * destination id of KVM_FEATURE_MSI_EXT_DEST_ID); with KVM_CAP_X2APIC_API's
 * 32-bit ids KVM wants bits 8–31 in the upper half of the address instead,
 * and without it there is nowhere to put them (they are dropped).
 */
export function kvmMsiAddress(address: bigint, x2apicIds: boolean): bigint {
  const lo = address & 0xffff_ffffn;
  const ext = (lo >> 5n) & 0x7fn;
  const base = lo & ~(0x7fn << 5n);
  return x2apicIds && ext !== 0n ? base | ((ext << 8n) << 32n) : base;
}

/**
 * Where the interrupt controllers live. `split` (the default): the local
 * APICs in KVM, the I/O APIC in user space (@ts-vmm/virtio-devices' `Ioapic`,
 * its pins routed as MSIs), no 8259 and no PIT, as Cloud Hypervisor does;
 * Linux needs ACPI for it (the MADT; our FADT is HW-reduced, so Linux expects
 * no legacy PIC or PIT). `full`: KVM_CREATE_IRQCHIP (LAPICs, I/O APIC and
 * 8259s in the kernel) with the in-kernel PIT, reinjection off — for guests
 * booted with `acpi=off` or that need the PIT.
 */
export type IrqchipMode = "split" | "full";

/** What to boot. */
export interface VmConfig {
  /** A PVH ELF (vmlinux, a micro-guest) or a bzImage: a path or the bytes. */
  readonly kernel: string | Uint8Array;
  /** An initrd: a path or the bytes. */
  readonly initrd?: string | Uint8Array;
  /** The kernel command line. */
  readonly cmdline?: string;
  /** Guest RAM in MiB (default 256, at least 2). */
  readonly memMiB?: number;
  /**
   * How guest RAM is backed (default: a memfd with 4 KiB pages): a guest_memfd,
   * a file, huge pages, prefaulting. Checked against the host before anything
   * is mapped (`MemoryBackendRefused`, one sentence naming what is missing).
   */
  readonly memory?: GuestMemoryOptions;
  /**
   * vCPUs (default 1, at most {@link MAX_VCPUS} and KVM_CAP_MAX_VCPUS; above
   * 254 only with the split irqchip and x2APIC). vCPU i has APIC id i; vCPU 0
   * boots, the others wait for INIT-SIPI from the guest on the in-kernel local APIC.
   */
  readonly vcpus?: number;
  /**
   * Serial output flow control: at most this many bytes of COM1 output are
   * waiting for `io.serial` at a time; beyond it the vCPU waits (as behind a
   * UART with flow control), so a guest flooding the serial port cannot grow
   * the VMM's memory without bound. Default 1 MiB.
   */
  readonly serialBacklogBytes?: number;
  /**
   * The CPU template: a built-in name (`host`, the default, or `baseline`),
   * the path of a JSON template, or a parsed {@link CpuTemplate}.
   */
  readonly cpuTemplate?: string | CpuTemplate;
  /**
   * Per-feature switches applied after the template: `"+shstk,-x2apic"` or
   * parsed switches. A feature KVM cannot provide is refused before the VM
   * runs (`CpuFeatureRefused`, one sentence naming what is missing).
   */
  readonly cpuFeatures?: string | readonly FeatureSwitch[];
  /** virtio-mmio devices, in the order they get windows and IRQs (see devices/virtio-manager.ts). */
  readonly virtio?: readonly VirtioDeviceConfig[];
  /** Interrupt controllers (default `split`, see {@link IrqchipMode}). */
  readonly irqchip?: IrqchipMode;
  /**
   * Log dirty pages (KVM's dirty log for the guest's writes, vm-memory's
   * bitmaps for the devices') so that {@link Vmm.snapshot} can take `Diff`
   * snapshots. Default false (it costs a write fault per page after each snapshot).
   */
  readonly enableDiffSnapshots?: boolean;
  /**
   * A CMOS RTC on ports 0x70/0x71 (@ts-vmm/virtio-devices' `CmosRtc`: the
   * host's UTC time, settable by the guest, no interrupt). Default true. false
   * leaves the ports floating and sets the FADT's "CMOS RTC Not Present" flag,
   * so Linux does not look for one (it then takes the time from kvmclock only).
   */
  readonly cmos?: boolean;
  /**
   * vCPU 0's early window (DESIGN.md, start-up): at the first start (not a restore),
   * {@link Vmm.run} runs vCPU 0 on the calling thread until its worker is ready (at most
   * {@link EARLY_WINDOW_MAX_MS} ms when the guest exits to the VMM meanwhile), then hands
   * it to the worker; the event loop is blocked meanwhile. `true`: always; `false`: never
   * (vCPU 0 starts in its worker); default: when vCPU 0's worker is one prestarted by
   * `prestartVcpuWorkers` (the `ts-vmm` binary's `run`, whose worker's start overlapped
   * this thread's) — unless the environment has `TS_VMM_EARLY_VCPU=0` (never) or
   * `TS_VMM_EARLY_VCPU=1` (always). What limits the block is the bound
   * ({@link VmConfig.earlyVcpuMaxMs}, a hard one): a worker prestarted just before `run()`
   * (an embedder's, a pool's) still loading can make the window last all of it.
   */
  readonly earlyVcpu?: boolean;
  /** The early window's bound in ms (default {@link EARLY_WINDOW_MAX_MS}, 1 to 10000; see there). */
  readonly earlyVcpuMaxMs?: number;
}

/** How vCPU 0's early window went ({@link Vmm.earlyWindow}). */
export interface EarlyWindowReport {
  /**
   * `handed`: the worker said it was ready and took the vCPU over; `given-up`: the main
   * thread left first (the bound passed, or an Intr not of the worker's: a signal, a stop
   * or pause asked from an io.serial callback, or the worker's setup failed), and the
   * worker starts the vCPU when it is ready (a failed one ends the run with its error);
   * `ended`: the run ended in the window (the guest's exit, a failure, or stop()), the
   * worker never ran the vCPU.
   */
  readonly outcome: "handed" | "given-up" | "ended";
  /** Exits of vCPU 0 served on the main thread (they are in the run's counters too). */
  readonly exits: number;
  /** First KVM_RUN on the main thread to the handover (or the end), ms. */
  readonly durationMs: number;
}

/**
 * The longest vCPU 0's early window lasts, in ms (DESIGN.md, start-up): checked after each
 * exit, and a timer of the main thread's (ThreadTimer, the kick signal at the bound, then
 * every millisecond) gets a guest that makes no exits out of KVM_RUN, so the event loop is
 * blocked at most the bound + ~1 ms + the service of one exit.
 */
export const EARLY_WINDOW_MAX_MS = 50;

/** VmConfig.earlyVcpu's default: `TS_VMM_EARLY_VCPU=0` never, `=1` always, else with a prestarted worker. */
function earlyVcpuFromEnv(): boolean | "prestarted" {
  const v = process.env["TS_VMM_EARLY_VCPU"];
  return v === "0" ? false : v === "1" ? true : "prestarted";
}

/** Where a {@link Vmm} is in its life: created, running, paused (vCPUs parked, devices quiet), or ended. */
export type VmmRunState = "NotStarted" | "Running" | "Paused" | "Stopped";

/** What {@link Vmm.snapshot} wrote. */
export interface SnapshotInfo {
  /** The state file. */
  readonly snapshotPath: string;
  /** The memory file. */
  readonly memFilePath: string;
  readonly type: "Full" | "Diff";
  /** Bytes of the state file. */
  readonly stateBytes: number;
  /** Bytes of guest memory written to the memory file (all of it for Full, the dirty pages for Diff). */
  readonly memoryBytesWritten: number;
  /** How long the snapshot took, in ms (the VM stays paused throughout). */
  readonly durationMs: number;
}

/** What {@link Vmm.restore} needs. */
export interface RestoreOptions {
  /** The state file {@link Vmm.snapshot} wrote. */
  readonly snapshotPath: string;
  /**
   * The memory file: a Full snapshot's, or a Diff's merged onto its base
   * ({@link mergeDiffSnapshot}). Mapped MAP_PRIVATE: never changed, and any
   * number of VMs can be restored from it at once.
   */
  readonly memFilePath: string;
  /** Log dirty pages in the restored VM, for Diff snapshots of it. Default false. */
  readonly enableDiffSnapshots?: boolean;
}

/** The state a restore builds from. */
interface RestorePlan {
  readonly state: SnapshotState;
}

/**
 * How {@link Vmm.create} sets up interrupt controllers and timers, as the
 * APICv/AVIC inhibit check sees it (`ts-vmm cpu-features`). Keep it in step
 * with create(): `split` has no 8259 (no ExtINT) and no PIT; `full` has
 * KVM_CREATE_IRQCHIP (the 8259 can deliver ExtINT) and the in-kernel PIT with
 * reinjection off.
 */
export function vmInterruptConfig(vcpus: number, x2apic: boolean, nestedVirt: boolean, irqchip: IrqchipMode = "split"): InterruptConfig {
  const base = { vcpus, x2apic, nestedVirt, hypervSynic: false, guestDebugBlockIrq: false, sev: false };
  return irqchip === "split"
    ? { ...base, irqchip: "split", pit: undefined, extInt: false }
    : { ...base, irqchip: "full", pit: { reinject: false }, extInt: true };
}

/** Where the guest's serial output goes. */
export interface VmIo {
  /** Bytes the guest wrote to COM1, as soon as the vCPU's exit that wrote them is handled. */
  serial(bytes: Uint8Array): void;
}

/** What one vCPU's setup did, for tests and tools. */
export interface VcpuSetup {
  /** The CPUID table set with KVM_SET_CPUID2. */
  readonly cpuid: readonly CpuidEntry[];
  /** Boot MSRs KVM refused (index), if any. */
  readonly msrsRefused: readonly number[];
}

const MiB = 1024 * 1024;

/**
 * Reads a kernel or initrd, at most `limit` bytes: neither can be larger than
 * guest memory, and a file that never ends (/dev/zero, a FIFO) must not be
 * read forever.
 */
function bytesOf(what: string, v: string | Uint8Array, limit: number): Uint8Array {
  if (typeof v !== "string") {
    if (v.byteLength > limit) throw new VmmError("InvalidConfig", `the ${what} (${v.byteLength} bytes) is larger than guest memory (${limit} bytes)`);
    return v;
  }
  const tooLarge = (): VmmError => new VmmError("InvalidConfig", `the ${what} ${v} is larger than guest memory (${limit} bytes)`);
  let fd: number;
  try {
    fd = openSync(v, "r");
  } catch (e) {
    throw new VmmError("FileNotReadable", `cannot read the ${what} ${v}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new VmmError("FileNotReadable", `cannot read the ${what} ${v}: it is a directory`);
    if (st.isFile() && st.size > limit) throw tooLarge();
    // Regular files: their size; anything else: read until EOF, at most limit + 1 bytes.
    let buf = new Uint8Array(st.isFile() ? st.size : Math.min(limit + 1, 1 << 20));
    let n = 0;
    for (;;) {
      if (n === buf.byteLength) {
        if (st.isFile() || n > limit) break;
        const bigger = new Uint8Array(Math.min(limit + 1, buf.byteLength * 2));
        bigger.set(buf);
        buf = bigger;
      }
      // At most 1 GiB per read(2): Node refuses lengths above 2^31 - 1.
      const got = readSync(fd, buf, n, Math.min(buf.byteLength - n, 1 << 30), null);
      if (got === 0) break;
      n += got;
    }
    if (n > limit) throw tooLarge();
    return buf.subarray(0, n);
  } catch (e) {
    if (e instanceof VmmError) throw e;
    throw new VmmError("FileNotReadable", `cannot read the ${what} ${v}: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens /dev/kvm; a permission error says so and how to fix it.
 * @throws {@link VmmError} `KvmPermissionDenied`; `SetupFailed` for other errors.
 */
export function openKvm(path = "/dev/kvm"): Kvm {
  try {
    return new Kvm(path);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === "EACCES" || code === "EPERM") {
      throw new VmmError("KvmPermissionDenied", `cannot open ${path}: permission denied; add your user to the kvm group (sudo usermod -aG kvm "$USER", then log in again) or run as root`, { cause: e });
    }
    if (code === "ENOENT") throw new VmmError("SetupFailed", `cannot open ${path}: it does not exist (is the kvm module loaded, and does the CPU have VMX or SVM?)`, { cause: e });
    throw new VmmError("SetupFailed", `cannot open ${path}: ${(e as Error).message}`, { cause: e });
  }
}



/** A promise with its settle functions; a rejection nobody awaits is not reported as unhandled. */
function deferred<T>(): { readonly promise: Promise<T>; resolve(v: T): void; reject(e: Error): void } {
  let resolve!: (v: T) => void, reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Orders the reasons when several vCPUs stop on their own: the first guest-caused end wins over a VMM stop. */
const isGuestEnd = (r: StopReason): boolean => r !== "Stopped";

/**
 * A virtual machine: guest memory, the loaded kernel, the interrupt
 * controllers (a split irqchip with a user-space I/O APIC by default, or
 * KVM's full irqchip and PIT: {@link IrqchipMode}), and N vCPUs, each in its own worker thread, with
 * the legacy devices a PC's Linux expects: a 16550A on COM1 (IRQ 4), an
 * i8042 (IRQ 1, reset, Ctrl-Alt-Del injection), the HW-reduced ACPI sleep and
 * reset registers, a CMOS RTC (unless `cmos: false`), the debug-exit port and the boot-timer port (all from
 * @ts-vmm/virtio-devices/legacy). The end of one vCPU (debug-exit, power-off,
 * reset, a triple fault, an error) stops all of them.
 */
export class Vmm {
  readonly #kvm: Kvm;
  readonly #vm: VmFd;
  readonly #mem: BuiltGuestMemory;
  readonly #vcpus: readonly VcpuFd[];
  readonly #irqs: readonly EventFd[];
  readonly #stop = new SharedArrayBuffer(4);
  readonly #serialState = serialState();
  readonly #i8042State = i8042State();
  /** The main thread's view of the i8042: injected keys go in here. */
  readonly #i8042: I8042;
  readonly #bootTimerState = bootTimerState();
  /** The CMOS RTC's shared state, and the main thread's view of it (for snapshots); undefined with `cmos: false`. */
  readonly #cmosState: SharedArrayBuffer | undefined;
  readonly #cmos: CmosRtc | undefined;
  /** The main thread's view of the boot timer (the workers record into the same list). */
  readonly #bootTimer = new BootTimer(this.#bootTimerState, { canWait: false });
  /** The main thread's view of the UART: host input goes in here. */
  readonly #serial: Serial16550;
  /** Host input the receive FIFO had no room for yet. */
  #rxQueue: Uint8Array[] = [];
  #workers: Worker[] | undefined;
  /** vCPUs whose worker has reported its end (no more KVM_RUN on them). */
  readonly #done: boolean[];
  /** close() was called. */
  #closed = false;
  /** The fds are closed (at close(), or when the run in flight settles). */
  #released = false;
  /** A run is in flight: its workers may still call KVM_RUN on the vCPU fds. */
  #running = false;
  /** The boot layout the loader wrote. */
  readonly boot: LinuxBoot;
  /** What each vCPU was set up with (index = vCPU id = APIC id). */
  readonly vcpuSetup: readonly VcpuSetup[];
  /** How guest memory was built (backend, page size, prefault, slot ioctl). */
  readonly memoryPlan: MemoryPlan;

  /** Serial output from the workers (flow-controlled at serialBacklogBytes). */
  readonly #serialOut: SerialOutputRing;
  /** The virtio devices (served on this thread). */
  readonly virtio: VirtioManager;
  /** One MMIO mailbox per vCPU: each worker forwards its virtio-mmio register exits through its own. */
  readonly #mmioMailboxes: SharedArrayBuffer[];
  /** The user-space I/O APIC of a split irqchip (served on this thread); undefined with a full irqchip. */
  readonly ioapic: Ioapic | undefined;
  /** Interrupt routing failures (a KVM_SET_GSI_ROUTING the kernel refused), at most 64. */
  readonly interruptErrors: readonly string[];
  /** Pause control shared with the workers: [0] pause asked, [1] epoch (see VcpuWorkerData.control). */
  readonly #control = new SharedArrayBuffer(8);
  #runState: VmmRunState = "NotStarted";
  /** The pause in progress, if any. */
  #pausing: { readonly epoch: number; readonly promise: Promise<void>; resolve(): void; reject(e: Error): void; vcpusParked: boolean } | undefined;
  /** The pause epoch each vCPU last parked for (-1: not parked). */
  readonly #parkedEpoch: number[];
  /** What a snapshot needs to rebuild this machine. */
  readonly #machine: SnapshotState["config"];
  /** Dirty logging is on (Diff snapshots possible). */
  readonly #diff: boolean;
  /** Whether a restore set the vCPUs' TSC rate to one other than the host's (then a snapshot reads their TSCs through IA32_TSC). */
  #tscScaled = false;
  /** A snapshot is being written. */
  #snapshotting = false;
  /** `[start, end)` of the MMIO windows the workers forward, and each one's name in the metrics. */
  readonly #mmioWindows: readonly (readonly [number, number])[];
  readonly #mmioWindowNames: readonly string[];
  /** Each vCPU's exit counters (src/metrics/exit-counters.ts), written by its worker. */
  readonly #exitCounters: readonly SharedArrayBuffer[];
  /** run() starts vCPU 0 on this thread until its worker is ready (VmConfig.earlyVcpu): always, never, or if its worker is prestarted. */
  readonly #earlyVcpu: boolean | "prestarted";
  /** The early window's bound (VmConfig.earlyVcpuMaxMs). */
  readonly #earlyVcpuMaxMs: number;
  #earlyReport: EarlyWindowReport | undefined;
  /** KVM's binary stats of the VM and its vCPUs. */
  readonly #kvmStats: KvmStatsSource;
  /** Settles when vCPU 0 first enters KVM_RUN (see whenRunning). */
  readonly #firstRun = deferred<number>();
  /** When run() started and ended (performance.now()), for the metrics' uptime. */
  readonly #clock: RunClock = { startedAt: undefined, endedAt: undefined };

  private constructor(kvm: Kvm, vm: VmFd, mem: BuiltGuestMemory, plan: MemoryPlan, vcpus: VcpuFd[], irqs: EventFd[], boot: LinuxBoot, setup: VcpuSetup[], backlog: number, virtio: VirtioManager, ioapic: Ioapic | undefined, interruptErrors: string[], machine: SnapshotState["config"], diff: boolean, cmos: boolean, earlyVcpu: boolean | "prestarted", earlyVcpuMaxMs: number) {
    this.#machine = machine;
    this.#earlyVcpu = earlyVcpu;
    this.#earlyVcpuMaxMs = earlyVcpuMaxMs;
    this.#cmosState = cmos ? cmosState() : undefined;
    this.#cmos = this.#cmosState ? new CmosRtc(this.#cmosState, { canWait: false }) : undefined;
    this.#diff = diff;
    this.#parkedEpoch = vcpus.map(() => -1);
    this.memoryPlan = plan;
    this.ioapic = ioapic;
    this.interruptErrors = interruptErrors;
    this.#serialOut = new SerialOutputRing(backlog);
    this.virtio = virtio;
    this.#mmioMailboxes = vcpus.map(() => new SharedArrayBuffer(MMIO_MAILBOX_BYTES));
    const virtioNames = virtio.devices.map((d) => d.name);
    this.#mmioWindows = ioapic ? [[IOAPIC_BASE, IOAPIC_BASE + IOAPIC_WINDOW], ...virtio.windows] : virtio.windows;
    this.#mmioWindowNames = ioapic ? ["ioapic", ...virtioNames] : virtioNames;
    this.#exitCounters = vcpus.map(() => new SharedArrayBuffer(exitCountersBytes(this.#mmioWindows.length)));
    this.#kvmStats = new KvmStatsSource(vm, vcpus);
    this.#kvm = kvm;
    this.#vm = vm;
    this.#mem = mem;
    this.#vcpus = vcpus;
    this.#irqs = irqs;
    this.#done = vcpus.map(() => false);
    this.boot = boot;
    this.vcpuSetup = setup;
    const serialIrq = irqs[0]!;
    this.#serial = new Serial16550(this.#serialState, {
      out: () => {}, // the main thread never writes THR
      irq: (level) => { if (level && !serialIrq.closed) serialIrq.write(1); },
    }, false);
    const kbdIrq = irqs[1]!;
    this.#i8042 = new I8042(this.#i8042State, {
      reset: () => {}, // only guest writes (in the workers) reset
      kbdIrq: () => { if (!kbdIrq.closed) kbdIrq.write(1); },
    }, false);
  }

  /**
   * Guest memory as the VMM sees it (the loader and the devices use the same
   * object): reads and writes reach the guest's RAM through the VMM's mapping.
   *
   * Safety: the guest changes this memory at any time while it runs; treat
   * what it wrote as hostile.
   * @throws {@link VmmError} `InvalidState` after the VM is released.
   */
  get memory(): GuestMemoryMmap {
    if (this.#released) throw new VmmError("InvalidState", "the VM is closed");
    return this.#mem.mem;
  }

  /** Number of vCPUs. */
  get vcpuCount(): number {
    return this.#vcpus.length;
  }

  /**
   * Creates the VM, loads the kernel and sets up the vCPUs. Nothing runs
   * until {@link Vmm.run}.
   * @throws {@link VmmError} `InvalidConfig`, `FileNotReadable`, or `SetupFailed`
   * wrapping a KvmError, GuestMemoryError or LoaderError.
   */
  static create(config: VmConfig): Vmm {
    return Vmm.#build(config, undefined);
  }

  static #build(config: VmConfig, restore: RestorePlan | undefined): Vmm {
    const irqchip = config.irqchip ?? "split";
    if (irqchip !== "split" && irqchip !== "full") throw new VmmError("InvalidConfig", `irqchip must be "split" or "full", got ${JSON.stringify(irqchip)}`);
    if (irqchip === "full" && (config.vcpus ?? 1) > MAX_XAPIC_VCPUS) {
      throw new VmmError("InvalidConfig", `${String(config.vcpus)} vCPUs need APIC ids above ${MAX_XAPIC_VCPUS}, which KVM's in-kernel I/O APIC cannot address: use the split irqchip`);
    }
    const earlyMaxMs = config.earlyVcpuMaxMs ?? EARLY_WINDOW_MAX_MS;
    if (typeof earlyMaxMs !== "number" || !Number.isFinite(earlyMaxMs) || earlyMaxMs < 1 || earlyMaxMs > 10_000) {
      throw new VmmError("InvalidConfig", `earlyVcpuMaxMs must be a number from 1 to 10000, got ${String(earlyMaxMs)}`);
    }
    const memMiB = config.memMiB ?? 256;
    if (!Number.isInteger(memMiB) || memMiB < 2 || memMiB > 1024 * 1024) {
      throw new VmmError("InvalidConfig", `memMiB must be a whole number from 2 to 1048576, got ${String(memMiB)}`);
    }
    const vcpuCount = config.vcpus ?? 1;
    if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_VCPUS) {
      throw new VmmError("InvalidConfig", `vcpus must be a whole number from 1 to ${MAX_VCPUS}, got ${String(vcpuCount)}`);
    }
    const backlog = config.serialBacklogBytes ?? 1 << 20;
    if (!Number.isInteger(backlog) || backlog < 1024 || backlog > 2 ** 30) {
      throw new VmmError("InvalidConfig", `serialBacklogBytes must be a whole number from 1024 to 2^30, got ${String(backlog)}`);
    }
    const cmos = config.cmos ?? true;
    if (typeof cmos !== "boolean") throw new VmmError("InvalidConfig", `cmos must be true or false, got ${JSON.stringify(cmos)}`);
    const memoryOptions = checkMemoryOptions(config.memory);
    const memoryProblem = memoryRequestProblem(memMiB, memoryOptions);
    if (memoryProblem !== undefined) throw new VmmError("InvalidConfig", memoryProblem);
    // A restore takes the CPU from the snapshot: no template to read (it is a file).
    const template = restore ? undefined : typeof config.cpuTemplate === "object" ? parseCpuTemplate(config.cpuTemplate) : loadCpuTemplate(config.cpuTemplate ?? "host");
    const switches = typeof config.cpuFeatures === "string" ? parseFeatureSwitches(config.cpuFeatures) : (config.cpuFeatures ?? []);
    const kernel = restore ? new Uint8Array(0) : bytesOf("kernel", config.kernel, memMiB * MiB);
    const initrd = restore || config.initrd === undefined ? undefined : bytesOf("initrd", config.initrd, memMiB * MiB);
    let kvm: Kvm | undefined;
    let vm: VmFd | undefined;
    let mem: BuiltGuestMemory | undefined;
    const vcpus: VcpuFd[] = [];
    const irqs: EventFd[] = [];
    let virtio: VirtioManager | undefined;
    let ioapic: Ioapic | undefined;
    let x2apicIds = false;
    const interruptErrors: string[] = [];
    try {
      kvm = openKvm();
      mark("kvm opened");
      const supported = supportedCpuid(kvm);
      const host = { supported, kernelRelease: release(), tscDeadlineCap: kvm.checkExtension(Kvm.Cap.TSC_DEADLINE_TIMER) > 0 };
      const cpuPolicy = template === undefined ? undefined : { template, switches, vcpus: vcpuCount, host };
      // The CPU policy first, on the normalized table of vCPU 0: a refused feature
      // should not wait for guest memory and the kernel. Each vCPU's own table is
      // normalized and checked again below (its APIC id and TSC rate differ).
      if (restore) {
        // A guest of another vendor must not wake up here (the feature bits are checked on vCPU 0 below).
        const sv = cpuidVendor(restore.state.vcpus[0]!.cpuid), hv = cpuidVendor(supported);
        if (sv !== hv) throw new VmmError("SnapshotInvalid", `the snapshot cannot run on this host: it was taken on a ${JSON.stringify(sv)} CPU and this host is ${JSON.stringify(hv)}`);
      } else {
        const early = applyCpuPolicy(normalizeCpuid(supported, { vcpuCount, vcpuId: 0, tscDeadline: host.tscDeadlineCap, msiExtDestId: irqchip === "split" }), cpuPolicy!);
        if (!early.ok) throw new VmmError("CpuFeatureRefused", early.refusal.message);
      }
      const kvmMax = kvm.checkExtension(Kvm.Cap.MAX_VCPUS);
      if (kvmMax > 0 && vcpuCount > kvmMax) throw new VmmError("InvalidConfig", `${vcpuCount} vCPUs: KVM allows at most ${kvmMax} per VM (KVM_CAP_MAX_VCPUS)`);
      vm = kvm.createVm();
      vm.setTssAddress(TSS_ADDR);
      if (irqchip === "split") {
        // Before any vCPU exists (KVM refuses it after). Every pin starts masked: no routes.
        vm.enableSplitIrqchip(IOAPIC_DEFAULT_PINS);
        // 32-bit APIC ids in routes (x2APIC ids above 255) and no xAPIC broadcast quirk for
        // id 0xff, as QEMU and Cloud Hypervisor enable it with a split irqchip.
        const x2apicApi = KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;
        if ((vm.checkExtension(Cap.X2APIC_API) & x2apicApi) === x2apicApi) {
          vm.enableCap(Cap.X2APIC_API, [x2apicApi]);
          x2apicIds = true;
        } else if (vcpuCount > MAX_XAPIC_VCPUS) {
          throw new VmmError("InvalidConfig", `${vcpuCount} vCPUs need 32-bit APIC ids in interrupt routes, and KVM lacks KVM_CAP_X2APIC_API (32-bit ids, no broadcast quirk)`);
        }
        const routedVm = vm;
        const wide = x2apicIds;
        ioapic = new Ioapic({
          onRoutesChanged: (routes) => {
            try {
              routedVm.setGsiRouting(splitIrqchipRoutes(routes, wide));
            } catch (e) {
              if (interruptErrors.length < 64) interruptErrors.push(`KVM_SET_GSI_ROUTING for the I/O APIC's routes failed: ${(e as Error).message}`);
            }
          },
        }, { id: IOAPIC_ID });
      } else {
        vm.createIrqchip();
        vm.setGsiRouting(gsiRoutes());
        // The i8254 in the kernel, its speaker port (0x61) too; reinjection of
        // missed ticks off: it inhibits APICv/AVIC, and Linux does not need it.
        vm.createPit2({ speakerDummy: true });
        vm.setPitReinject(false);
      }
      for (const gsi of [COM1_IRQ, KBD_IRQ]) {
        const e = new EventFd();
        irqs.push(e);
        vm.registerIrqfd(e, gsi);
      }
      mark("vm and irqchip created");
      // Guest memory: checked against this VM's KVM and the host's pools before anything is mapped.
      const planned = planGuestMemory(memMiB, memoryOptions, readMemoryHostFacts(vm));
      if (!planned.ok) throw new VmmError("MemoryBackendRefused", planned.refusal);
      const ranges = ramRegions(memMiB * MiB);
      if (restore) {
        const saved = restore.state.memory.regions;
        let off = 0;
        const same = saved.length === ranges.length && saved.every((r, i) => {
          const ok = r.start === ranges[i]!.start && r.size === ranges[i]!.size && r.fileOffset === off;
          off += r.size;
          return ok;
        });
        if (!same) throw new VmmError("SnapshotInvalid", "the snapshot's memory regions are not the layout of its memory size");
        if (restore.state.config.x2apicIds && !x2apicIds) throw new VmmError("SnapshotInvalid", "the snapshot's interrupt routes use 32-bit APIC ids, and this KVM lacks KVM_CAP_X2APIC_API");
      }
      mem = buildGuestMemory(vm, planned.plan, ranges, { dirtyLog: config.enableDiffSnapshots ?? false });
      mark("guest memory mapped");
      virtio = VirtioManager.create(vm, mem.mem, config.virtio ?? []);
      if (restore) virtio.restoreStates(restore.state.devices.virtio);
      mark("virtio devices created");
      const boot = restore ? restore.state.boot : loadLinux(mem.mem, {
        virtioMmio: virtio.mmioDevices,
        virtioMmioOnCmdline: true,
        kernel,
        ...(initrd ? { initrd } : {}),
        cmdline: config.cmdline ?? "",
        cpus: vcpuCount,
        cmosRtc: cmos,
        // Fresh memfd, anonymous or guest_memfd memory reads as zeroes: the ELF's BSS needs no
        // writes (the micro-guest's 4 MiB of them only faulted its pages in, ~3 ms). A file
        // backend holds the file's bytes, so its BSS is zeroed.
        memoryIsZero: planned.plan.source !== "file",
      });
      mark("kernel loaded");
      const tscDeadline = vm.checkExtension(Cap.TSC_DEADLINE_TIMER) > 0;
      const setup: VcpuSetup[] = [];
      let clockRestore: ClockRestore | undefined;
      let tscScaled = false;
      for (let id = 0; id < vcpuCount; id++) {
        const vcpu = vm.createVcpu(id);
        vcpus.push(vcpu);
        if (restore) {
          const saved = restore.state.vcpus[id]!;
          if (id === 0) {
            // A guest that saw CPU features this host's KVM cannot give must not wake up here.
            // The read-back is per host: probed on the first restore's vCPU 0, then cached.
            const readBack = cpuidReadBack(() => {
              vcpu.setCpuid2(supported);
              return vcpu.getCpuid2();
            });
            const mismatch = cpuMismatch(saved.cpuid, supported, readBack);
            if (mismatch !== undefined) throw new VmmError("SnapshotInvalid", `the snapshot cannot run on this host: ${mismatch}`);
          }
          let hostKhz = 0;
          try {
            hostKhz = vcpu.getTscKhz();
          } catch {
            hostKhz = 0;
          }
          try {
            // The clock on vCPU 0, then each vCPU's TSC paired with it (ClockRestore).
            const clocks = clockRestore ??= new ClockRestore(vm, restore.state.vm.clock);
            restoreVcpu(vcpu, saved, hostKhz, () => clocks.beforeMsrs(vcpu, saved, hostKhz));
            if (saved.tscKhz > 0 && saved.tscKhz !== hostKhz) tscScaled = true;
          } catch (e) {
            throw new VmmError("SnapshotInvalid", `restoring vCPU ${id} failed: ${(e as Error).message}`, { cause: e });
          }
          setup.push({ cpuid: saved.cpuid, msrsRefused: [] });
          continue;
        }
        let tscKhz: number | undefined;
        try {
          const k = vcpu.getTscKhz();
          if (k > 0) tscKhz = k;
        } catch {
          tscKhz = undefined; // KVM_GET_TSC_KHZ unsupported: no timing leaf
        }
        // Normalization (hypervisor bit, KVM leaves, topology) first, then the template and switches.
        const policy = applyCpuPolicy(normalizeCpuid(supported, { vcpuCount, vcpuId: id, ...(tscKhz !== undefined ? { tscKhz } : {}), tscDeadline, msiExtDestId: irqchip === "split" && x2apicIds }), cpuPolicy!);
        if (!policy.ok) throw new VmmError("CpuFeatureRefused", policy.refusal.message);
        const cpuid = policy.entries;
        vcpu.setCpuid2(cpuid);
        // One at a time: KVM_SET_MSRS stops at the first MSR it refuses.
        const msrsRefused = BOOT_MSRS.filter((m) => vcpu.setMsrs([m]) !== 1).map((m) => m.index);
        if (id === 0) {
          vcpu.setSregs({ ...vcpu.getSregs(), ...boot.cpu.sregs });
          vcpu.setRegs(boot.cpu.regs);
        }
        setup.push({ cpuid, msrsRefused });
      }
      mark("vcpus set up");
      if (restore) restoreVmState(vm, ioapic, restore.state);
      const machine = { memMiB, vcpus: vcpuCount, irqchip, serialBacklogBytes: backlog, virtio: config.virtio ?? [], x2apicIds };
      const vmm = new Vmm(kvm, vm, mem, planned.plan, vcpus, irqs, boot, setup, backlog, virtio, ioapic, interruptErrors, machine, config.enableDiffSnapshots ?? false, cmos,
        // Not for a restore: its vCPU 0 continues mid-run, where the start-up gain does not apply.
        restore === undefined && (config.earlyVcpu ?? earlyVcpuFromEnv()), earlyMaxMs);
      if (restore) {
        vmm.#serial.restoreState(restore.state.devices.serial);
        vmm.#i8042.restoreState(restore.state.devices.i8042);
        if (restore.state.devices.cmos) vmm.#cmos?.restoreState(restore.state.devices.cmos);
        vmm.#tscScaled = tscScaled;
        mark(`TSCs restored: ${clockRestore?.offsetsSet ?? 0} of ${vcpuCount} as offsets paired with the clock`);
      }
      return vmm;
    } catch (e) {
      virtio?.close();
      for (const v of vcpus) v.close();
      for (const i of irqs) i.close();
      mem?.close();
      vm?.close();
      kvm?.close();
      if (e instanceof VmmError) throw e;
      if (restore) throw new VmmError("SnapshotInvalid", `restoring the snapshot failed: ${(e as Error).message}`, { cause: e });
      throw new VmmError("SetupFailed", `setting up the VM failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * KVM_GET_CPUID2 of vCPU `id`: the table KVM holds for it (a read-back of
   * what setup set, for tests and the cpu-features report).
   * @throws {@link VmmError} `InvalidState` after close(); `InvalidConfig` for an id out of range.
   */
  readCpuid(id: number): CpuidEntry[] {
    if (this.#released) throw new VmmError("InvalidState", "the VM is closed");
    const v = this.#vcpus[id];
    if (v === undefined) throw new VmmError("InvalidConfig", `no vCPU ${String(id)}; this VM has ${this.#vcpus.length}`);
    return v.getCpuid2();
  }

  /**
   * Input for COM1, as from a terminal: the bytes enter the UART's 16-byte
   * receive FIFO as the guest makes room (the rest waits here, in order), with
   * the received-data interrupt. Ignored after the run or close().
   */
  sendSerialInput(bytes: Uint8Array): void {
    if (this.#released || bytes.byteLength === 0) return;
    this.#rxQueue.push(Uint8Array.from(bytes));
    this.#feed();
  }

  /**
   * Presses and releases Ctrl-Alt-Del on the i8042 keyboard (IRQ 1), as a
   * user at the console would: Linux reboots (or signals init, per its
   * ctrl-alt-del setting) and the run ends with `Reset` when it resets
   * through the i8042 or the ACPI reset register. Returns false if nothing was
   * injected: the guest disabled the keyboard, its output queue is full, or
   * the VM is closed.
   */
  sendCtrlAltDel(): boolean {
    if (this.#released) return false;
    return this.#i8042.ctrlAltDel();
  }

  /**
   * Changes the balloon's target while the VM runs (or before): the guest's
   * driver gets a configuration-change interrupt and inflates toward
   * `amountMib` MiB (the memory it gives back is returned to the host) or
   * deflates. The API's balloon endpoint calls this.
   * @throws {@link VmmError} `InvalidState` after close(); `InvalidConfig` without a
   *   balloon device or for an amount that is not a whole number of MiB up to the guest's memory.
   */
  setBalloonTarget(amountMib: number): void {
    if (this.#released) throw new VmmError("InvalidState", "the VM is closed");
    this.virtio.setBalloonTarget(amountMib);
  }

  /**
   * The balloon as the host sees it: target and actual size in MiB (actual is
   * what the driver last wrote), the driver's latest statistics and the
   * device's counters; undefined without a balloon device.
   */
  balloonStatus(): { targetMib: number; actualMib: number; stats: BalloonStats | undefined; metrics: BalloonMetrics } | undefined {
    const b = this.virtio.balloon;
    if (b === undefined) return undefined;
    return { targetMib: b.targetPages / 256, actualMib: b.actualPages / 256, stats: b.latestStats(), metrics: { ...b.metrics } };
  }

  /**
   * The milestones the guest marked on the boot-timer port (0x440, see
   * `BootTimer` in @ts-vmm/virtio-devices): each 1-, 2- or 4-byte write with
   * its host time in microseconds since {@link Vmm.run} started; at most 64,
   * later writes counted in `dropped`. Empty before the run.
   */
  bootMilestones(): BootTimerReport {
    return this.#bootTimer.report();
  }

  #feed(): void {
    while (this.#rxQueue.length > 0 && !this.#released) {
      const head = this.#rxQueue[0]!;
      const n = this.#serial.enqueue(head);
      if (n === head.byteLength) this.#rxQueue.shift();
      else {
        this.#rxQueue[0] = head.subarray(n);
        return; // the FIFO is full: a worker says rxSpace when the guest reads
      }
    }
  }

  /**
   * Runs the guest until a vCPU exits through the debug-exit port, the guest
   * powers off or resets, a vCPU fails, or {@link Vmm.stop} is called; then
   * every vCPU is stopped and the first vCPU's reason is the result. Serial
   * output goes to `io`; if `io.serial` throws, the VM is stopped and the run
   * ends with reason `Error`. With vCPU 0's early window ({@link VmConfig.earlyVcpu}: by
   * default when its worker was prestarted) this returns only after the window: vCPU 0 runs on the calling thread until its
   * worker is ready, `io.serial` is called from inside this call meanwhile, and the run
   * may even have ended when it returns (the promise is then settled).
   * @throws {@link VmmError} `InvalidState` if the VM already ran or was closed.
   */
  run(io: VmIo): Promise<RunResult> {
    if (this.#closed || this.#workers) throw new VmmError("InvalidState", "a Vmm runs once; create another to boot again");
    const workers: Worker[] = [];
    this.#workers = workers;
    this.#running = true;
    this.#runState = "Running";
    this.virtio.resume(); // a restored VM's devices wait, paused, for its first run
    this.#bootTimer.restart();
    this.#clock.startedAt = performance.now();
    return new Promise<RunResult>((resolve) => {
      let first: RunResult | undefined;
      const exits: Record<string, number> = {};
      const states: VcpuEndState[] = [];
      let left = this.#vcpus.length;
      // A throwing io.serial would be an uncaught exception in this event
      // handler: stop the VM instead and report it as the run's error.
      let ioError: unknown;
      let drainTimer: ReturnType<typeof setTimeout> | undefined;
      let firstOutput = false;
      let lastDrainAt = -Infinity;
      const deliver = (bytes: Uint8Array): void => {
        if (ioError !== undefined) return;
        if (!firstOutput) {
          firstOutput = true;
          mark("first serial output on the main thread");
        }
        try {
          io.serial(bytes);
        } catch (e) {
          ioError = e ?? new Error(String(e));
          this.stop();
        }
      };
      const drain = (): void => {
        lastDrainAt = performance.now();
        // Always take the bytes (a full ring pauses the vCPUs); hand them on unless io.serial failed.
        const bytes = this.#serialOut.drain();
        if (bytes !== undefined) deliver(bytes);
      };
      const vcpuEnded = (id: number, r: RunResult): void => {
        if (this.#done[id]) return;
        this.#done[id] = true;
        for (const [k, n] of Object.entries(r.exits)) exits[k] = (exits[k] ?? 0) + n;
        for (const v of r.vcpus ?? []) states.push(v);
        if (first === undefined || (!isGuestEnd(first.reason) && isGuestEnd(r.reason))) first = r;
        this.#checkPaused();
        // The end of one vCPU ends the VM.
        this.stop();
        void workers[id]?.terminate();
        if (--left > 0) return;
        // Every worker has left its KVM_RUN loop; take what the ring still holds.
        if (drainTimer !== undefined) clearTimeout(drainTimer);
        drain();
        this.#clock.endedAt = performance.now();
        this.#firstRun.reject(new VmmError("InvalidState", `the run ended (${first?.reason ?? "Error"}${first?.detail ? `: ${first.detail}` : ""}) before vCPU 0 entered KVM_RUN`));
        this.#running = false;
        this.#runState = "Stopped";
        this.#checkPaused();
        if (this.#closed) this.#release();
        const base = ioError !== undefined
          ? { reason: "Error" as const, guestExitValue: null, detail: `the serial output callback threw: ${ioError instanceof Error ? ioError.message : String(ioError)}` }
          : first;
        resolve({ ...base, exits, vcpus: states.sort((a, b) => a.id - b.id) });
      };
      // vCPU 0's early window: its worker gets the handover cell and waits for the vCPU.
      const early = this.#earlyVcpu === "prestarted" ? prestartedVcpuWorkers() > 0 : this.#earlyVcpu;
      const handover = early ? new SharedArrayBuffer(4) : undefined;
      let data0: VcpuWorkerData | undefined;
      const mailboxSpinMs = defaultMailboxSpinMs(this.#vcpus.length);
      this.#vcpus.forEach((vcpu, id) => {
        const data: VcpuWorkerData = {
          vcpu: vcpu.toTransferable(),
          stop: this.#stop,
          control: this.#control,
          serialOut: this.#serialOut.buffer,
          serial: this.#serialState,
          i8042: this.#i8042State,
          bootTimer: this.#bootTimerState,
          ...(this.#cmosState ? { cmos: this.#cmosState } : {}),
          serialIrqFd: this.#irqs[0]!.fd,
          kbdIrqFd: this.#irqs[1]!.fd,
          mmioMailbox: this.#mmioMailboxes[id]!,
          mailboxSpinMs,
          interruptCells: this.virtio.interruptCells,
          mmioWindows: this.#mmioWindows,
          exitCounters: this.#exitCounters[id]!,
          ...(id === 0 && handover ? { handover } : {}),
        };
        if (id === 0) data0 = data;
        this.virtio.serve(this.#mmioMailboxes[id]!, this.ioapic ? (r) => this.#ioapicAccess(r) : undefined);
        // Prestarted (prestartVcpuWorkers) or new; either way compiled JS from dist/.
        const worker = takeVcpuWorker(data);
        workers.push(worker);
        mark(`vCPU ${id} worker spawned`);
        worker.on("message", (m: VcpuWorkerMessage) => {
          if (m.type === "serialWake") {
            // Gather for a millisecond: while the wake-up flag stays set, the workers post
            // nothing, so a guest printing a byte per exit costs a message per millisecond.
            // The first wake after a quiet millisecond drains at once (the first byte of a
            // line after a pause, the guest's very first output): nothing is gathered by waiting.
            if (drainTimer === undefined && performance.now() - lastDrainAt >= 1) drain();
            else drainTimer ??= setTimeout(() => {
              drainTimer = undefined;
              drain();
            }, 1);
          } else if (m.type === "rxSpace") this.#feed();
          else if (m.type === "trace") for (const t of m.marks) mark(`vCPU ${id}: ${t.phase}`, t.at);
          else if (m.type === "running") {
            if (id === 0) this.#firstRun.resolve(m.at);
          }
          else if (m.type === "parked") {
            this.#parkedEpoch[id] = m.epoch;
            this.#checkPaused();
          }
          else vcpuEnded(id, m.result);
        });
        worker.on("error", (e) => vcpuEnded(id, { reason: "Error", guestExitValue: null, detail: `vCPU ${id} worker failed: ${e.message}`, exits: {} }));
        worker.on("exit", (code) => vcpuEnded(id, { reason: "Error", guestExitValue: null, detail: `vCPU ${id} worker exited with ${code} before the VM stopped`, exits: {} }));
      });
      if (handover && data0) this.#earlyWindow(data0, new Int32Array(handover), drain, deliver, (r) => vcpuEnded(0, r));
    });
  }

  /**
   * vCPU 0's early window (DESIGN.md, start-up): runs it here, with the same loop and
   * port I/O devices as its worker (vcpu-loop.ts), serial output delivered at once and
   * MMIO served inline, until the worker says it is ready (it kicks the vCPU), any other
   * Intr (a signal for this thread, a stop or pause asked from an io.serial callback), an
   * exit after {@link EARLY_WINDOW_MAX_MS}, or the vCPU's end. Then hands it over, or, if
   * the run ended here, reports the end through `ended`.
   */
  #earlyWindow(data: VcpuWorkerData, cell: Int32Array, drain: () => void, deliver: (bytes: Uint8Array) => void, ended: (r: RunResult) => void): void {
    const startedAt = performance.now();
    try {
      this.#earlyWindowBody(data, cell, drain, deliver, ended, startedAt);
    } catch (e) {
      // Whatever threw (the loop's host callbacks are guarded; this is the timer, a counter
      // read, a bug): the worker must not run the vCPU, and the run ends through the same
      // path as any vCPU's end, so the other vCPUs stop and close() works.
      Atomics.store(cell, 0, EarlyHandover.Ended);
      Atomics.notify(cell, 0);
      this.#earlyReport = { outcome: "ended", exits: 0, durationMs: performance.now() - startedAt };
      mark("vCPU 0's early window failed");
      ended({ reason: "Error", guestExitValue: null, detail: `vCPU 0 (early window): ${e instanceof Error ? e.message : String(e)}`, exits: {} });
    }
  }

  #earlyWindowBody(data: VcpuWorkerData, cell: Int32Array, drain: () => void, deliver: (bytes: Uint8Array) => void, ended: (r: RunResult) => void, startedAt: number): void {
    const vcpu = this.#vcpus[0]!;
    const stop = new Int32Array(this.#stop);
    const control = new Int32Array(this.#control);
    const ioapic = this.ioapic ? (r: MmioRequest): boolean => this.#ioapicAccess(r) : undefined;
    const loop = new VcpuLoop(vcpu, data, {
      // What the other vCPUs put in the ring comes first; the main thread is its consumer.
      output: (out, length) => {
        drain();
        deliver(out.slice(0, length));
      },
      rxSpace: () => this.#feed(),
      mmio: (address, write, bytes) => {
        const r: MmioRequest = { address, write, data: bytes };
        try {
          if (ioapic?.(r) !== true) this.virtio.handle(r);
        } catch {
          if (!write) bytes.fill(0xff);
        }
      },
      interrupted: () => (Atomics.load(stop, 0) !== 0 ? IntrAction.Stop : IntrAction.Leave),
    }, false);
    mark("vCPU 0: first KVM_RUN, on the main thread");
    this.#firstRun.resolve(absoluteNow());
    const counters = this.#exitCounters[0]!;
    const exitsBefore = readExitCounters(counters, this.#mmioWindowNames).total;
    // The hard bound, for a guest that makes no exits and a worker that never kicks (it died
    // loading): this thread's own timer sends it the kick signal at the bound, then every
    // millisecond (a tick outside KVM_RUN is absorbed by the no-op handler; the next one, or
    // the deadline check after an exit, ends the window).
    const timer = ThreadTimer.create(data.vcpu.kickSignal);
    let end: ReturnType<VcpuLoop["run"]>;
    try {
      timer.arm(this.#earlyVcpuMaxMs, 1);
      end = loop.run(startedAt + this.#earlyVcpuMaxMs);
    } finally {
      timer.close();
    }
    const report = (outcome: EarlyWindowReport["outcome"]): void => {
      this.#earlyReport = { outcome, exits: readExitCounters(counters, this.#mmioWindowNames).total - exitsBefore, durationMs: performance.now() - startedAt };
    };
    if (end !== null) {
      Atomics.store(cell, 0, EarlyHandover.Ended);
      Atomics.notify(cell, 0);
      mark("vCPU 0 ended in the early window");
      report("ended");
      const state = loop.endState();
      ended({ ...end, exits: state.exits, vcpus: [state] });
      return;
    }
    // Out of KVM_RUN, every exit completed (KVM finishes a pending one on the worker's first
    // KVM_RUN). Forget this thread as the kick target: a kick before the worker's first
    // KVM_RUN sets immediate_exit only. A pause asked meanwhile parks the worker at once.
    Atomics.store(new Int32Array(vcpu.toTransferable().tid), 0, 0);
    if (Atomics.load(control, 0) === 1) vcpu.setImmediateExit(true);
    const ready = Atomics.exchange(cell, 0, EarlyHandover.Handed) === EarlyHandover.Ready;
    Atomics.notify(cell, 0);
    report(ready ? "handed" : "given-up");
    mark(ready ? "vCPU 0 handed to its worker" : "vCPU 0's early window given up before its worker was ready");
  }

  /**
   * The VMM's counters now (see {@link VmmMetrics}): exits by reason and by device
   * from every vCPU's worker, the virtio devices' and the I/O APIC's counters, and
   * KVM's own statistics where the host has them. Cheap enough to call often (a
   * few hundred numbers and one pread per stats file); no message goes to the
   * workers. Works before, during and after the run, and after close() (the last
   * KVM statistics read are kept).
   */
  metrics(): VmmMetrics {
    return collectMetrics({
      exitCounters: this.#exitCounters,
      windowNames: this.#mmioWindowNames,
      devices: this.virtio.devices,
      ioapic: this.ioapic,
      kvm: this.#kvmStats,
      clock: this.#clock,
    });
  }

  /**
   * When the guest runs: resolves once vCPU 0's worker enters its first
   * KVM_RUN after {@link Vmm.run} (for a restored VM, the moment the guest
   * continues from its snapshot), with that moment in ms since the Unix epoch
   * (`performance.timeOrigin + performance.now()` in the worker, comparable
   * with the same sum on any thread of this host). This is what "restore to
   * running" is measured to ([DESIGN.md](../DESIGN.md)).
   * @throws {@link VmmError} `InvalidState` (as a rejection) if the VM is closed, or
   *   its run ends, before vCPU 0 got there.
   */
  whenRunning(): Promise<number> {
    return this.#firstRun.promise;
  }

  /**
   * How vCPU 0's early window went (see {@link VmConfig.earlyVcpu}): undefined before
   * {@link Vmm.run}, without a window (turned off, or a restored VM), or while it lasts.
   */
  get earlyWindow(): EarlyWindowReport | undefined {
    return this.#earlyReport;
  }

  /** Serves an MMIO access if it is in the I/O APIC's window. */
  #ioapicAccess(r: MmioRequest): boolean {
    const io = this.ioapic;
    if (io === undefined || r.address < IOAPIC_BASE || r.address >= IOAPIC_BASE + IOAPIC_WINDOW) return false;
    if (r.write) io.write(r.address - IOAPIC_BASE, r.data);
    else io.read(r.address - IOAPIC_BASE, r.data);
    return true;
  }

  /** The machine this VM was built with or restored to (memory size, vCPUs, irqchip, virtio devices), as a snapshot records it. */
  get machine(): SnapshotState["config"] {
    return this.#machine;
  }

  /** Where the VM is: `NotStarted` before {@link Vmm.run}, `Running`, `Paused` (after {@link Vmm.pause} resolved), `Stopped` once the run ended. */
  get state(): VmmRunState {
    return this.#runState;
  }

  /**
   * Pauses the guest: every vCPU is kicked out of KVM_RUN (immediate_exit and
   * the kick signal) and parks in its worker (Atomics.wait, no spinning) at an
   * instruction boundary, with any I/O or MMIO exit it was in completed; then
   * the virtio devices are quiesced (notifications already posted are served,
   * host I/O in flight finishes). Resolves once all of that holds. Halted
   * vCPUs and APs still waiting for INIT/SIPI park as well. Idempotent while
   * paused (and while a pause is under way: the same promise).
   * @throws {@link VmmError} `InvalidState` (as a rejection) if the VM is not running, or
   *   if the guest ended or the VM was stopped before every vCPU parked.
   */
  pause(): Promise<void> {
    if (this.#runState === "Paused") return Promise.resolve();
    if (this.#pausing !== undefined) return this.#pausing.promise;
    if (this.#runState !== "Running" || this.#closed) {
      return Promise.reject(new VmmError("InvalidState", `cannot pause a VM that is ${this.#runState === "NotStarted" ? "not started" : "not running"} (state ${this.#runState})`));
    }
    const ctl = new Int32Array(this.#control);
    const epoch = Atomics.load(ctl, 1);
    let resolve!: () => void, reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
    this.#pausing = { epoch, promise, resolve, reject, vcpusParked: false };
    Atomics.store(ctl, 0, 1);
    Atomics.notify(ctl, 0);
    this.#vcpus.forEach((v, id) => {
      if (!this.#done[id]) v.kick();
    });
    this.#checkPaused();
    return promise;
  }

  /** Settles the pause in progress once every vCPU parked (or one ended). */
  #checkPaused(): void {
    const p = this.#pausing;
    if (p === undefined || p.vcpusParked) return;
    if (this.#done.some((d) => d) || this.#runState === "Stopped") {
      this.#pausing = undefined;
      p.reject(new VmmError("InvalidState", "the VM stopped (the guest ended or stop() was called) before every vCPU was paused"));
      return;
    }
    if (!this.#parkedEpoch.every((e) => e === p.epoch)) return;
    p.vcpusParked = true;
    this.virtio.quiesce().then(
      () => {
        if (this.#pausing !== p) return;
        this.#pausing = undefined;
        if (this.#runState !== "Running" || this.#done.some((d) => d)) {
          p.reject(new VmmError("InvalidState", "the VM stopped while its devices were being quiesced"));
          return;
        }
        this.#runState = "Paused";
        p.resolve();
      },
      (e: unknown) => {
        if (this.#pausing !== p) return;
        this.#pausing = undefined;
        // The vCPUs are parked but a device would not settle: run the guest again rather than leave it half-paused.
        this.virtio.resume();
        this.#unpark();
        p.reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  #unpark(): void {
    const ctl = new Int32Array(this.#control);
    Atomics.add(ctl, 1, 1);
    Atomics.store(ctl, 0, 0);
    Atomics.notify(ctl, 0);
  }

  /**
   * Continues a paused guest exactly where it stopped: every vCPU leaves its
   * park and enters KVM_RUN again.
   * @throws {@link VmmError} `InvalidState` when the VM is not paused (or a snapshot is being written).
   */
  resume(): void {
    if (this.#runState !== "Paused") throw new VmmError("InvalidState", `cannot resume a VM that is not paused (state ${this.#runState})`);
    if (this.#snapshotting) throw new VmmError("InvalidState", "cannot resume while a snapshot is being written");
    this.#runState = "Running";
    this.virtio.resume();
    this.#unpark();
  }

  /**
   * Writes a snapshot of the paused VM: the state file at `snapshotPath`
   * (magic, format version, the state as JSON, CRC-64/XZ; see [DESIGN.md](../DESIGN.md)) and
   * guest memory at `memFilePath`: all of it (`Full`, the default), or only the
   * pages written since the last snapshot or since the VM was created or
   * restored (`Diff`, with {@link VmConfig.enableDiffSnapshots}; merge it onto the
   * previous memory file with {@link mergeDiffSnapshot}). The VM stays paused.
   * The memory file is written under a temporary name and renamed over
   * `memFilePath`, so a VM that maps the file there (this one, restored from
   * it, or another) keeps the file it mapped.
   * @throws {@link VmmError} `InvalidConfig` for a bad type or one path for both files;
   *   `InvalidState` unless paused (or if another snapshot is being
   *   written, or `Diff` without dirty logging); `SnapshotFailed` for KVM or file errors.
   */
  async snapshot(opts: { snapshotPath: string; memFilePath: string; type?: "Full" | "Diff" }): Promise<SnapshotInfo> {
    const type = opts.type ?? "Full";
    if (type !== "Full" && type !== "Diff") throw new VmmError("InvalidConfig", `snapshot type must be "Full" or "Diff", got ${JSON.stringify(type)}`);
    // The state file is renamed into place after the memory file: one path for both loses the memory.
    if (resolvePath(opts.snapshotPath) === resolvePath(opts.memFilePath)) throw new VmmError("InvalidConfig", `the snapshot and memory files must differ (both are ${opts.snapshotPath})`);
    if (this.#runState !== "Paused") throw new VmmError("InvalidState", `the VM must be paused to take a snapshot (it is ${this.#runState})`);
    if (this.#snapshotting) throw new VmmError("InvalidState", "a snapshot is already being written");
    if (type === "Diff" && !this.#diff) throw new VmmError("InvalidState", "a Diff snapshot needs dirty page logging: create or restore the VM with enableDiffSnapshots");
    this.#snapshotting = true;
    try {
      return await takeSnapshot({
        kvm: this.#kvm, vm: this.#vm, vcpus: this.#vcpus, mem: this.#mem.mem, ioapic: this.ioapic, virtio: this.virtio,
        serial: this.#serial, i8042: this.#i8042, cmos: this.#cmos, boot: this.boot, machine: this.#machine, diffLogging: this.#diff, tscScaled: this.#tscScaled,
      }, { ...opts, type });
    } finally {
      this.#snapshotting = false;
    }
  }

  /**
   * A new VM from a snapshot: the state file is checked (magic, version, CRC,
   * every field) and the host's CPU against the guest's, guest memory is the
   * memory file mapped MAP_PRIVATE (pages load lazily when touched; the file
   * is never written; many VMs can share it), and the vCPUs, interrupt
   * controllers, clock and devices are set from the state. {@link Vmm.run}
   * continues the guest where it was paused. Its disks are opened again from
   * the paths they had.
   * @throws {@link VmmError} `SnapshotInvalid` for a corrupted, truncated,
   *   wrong-version or wrong-CPU snapshot, a memory file of the wrong size, or
   *   a state KVM or a device refuses (nothing runs); other codes as {@link Vmm.create}.
   */
  static restore(opts: RestoreOptions): Vmm {
    // Read and checked once per file version in this process (snapshot/state-cache.ts).
    const state = readSnapshotCached(opts.snapshotPath, opts.memFilePath);
    return Vmm.#build({
      kernel: new Uint8Array(0),
      memMiB: state.config.memMiB,
      vcpus: state.config.vcpus,
      irqchip: state.config.irqchip,
      serialBacklogBytes: state.config.serialBacklogBytes,
      virtio: state.config.virtio,
      // The guest was told about a CMOS (the FADT) iff the snapshot has its state.
      cmos: state.devices.cmos !== undefined,
      // The file backend takes absolute paths only; a relative memFilePath is the caller's cwd's.
      memory: { backend: { kind: "file", path: resolvePath(opts.memFilePath) }, shared: false },
      enableDiffSnapshots: opts.enableDiffSnapshots ?? false,
    }, { state });
  }

  /** Asks every vCPU to stop: run() then resolves (with `Stopped` unless a vCPU ended first). Safe to call more than once. */
  stop(): void {
    Atomics.store(new Int32Array(this.#stop), 0, 1);
    // Parked workers wait on the control cell: wake them to see the stop.
    Atomics.notify(new Int32Array(this.#control), 0);
    if (this.#released) return;
    // Kick only vCPUs of a run in flight whose worker has not left, or of a run
    // not started yet (immediate_exit makes the first KVM_RUN return). After a
    // worker has left, its recorded tid is stale and may name another thread.
    this.#vcpus.forEach((v, id) => {
      if (this.#workers === undefined || (this.#running && !this.#done[id])) v.kick();
    });
  }

  /**
   * Releases the vCPUs, the VM, guest memory and /dev/kvm. Idempotent. Called
   * while a run is in flight, it stops the vCPUs first (run() resolves with
   * `Stopped`) and releases everything once every worker has left KVM_RUN, so
   * no worker runs a closed (or reused) fd number.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#running) {
      this.stop();
      return;
    }
    this.#firstRun.reject(new VmmError("InvalidState", "the VM was closed before it ran"));
    this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.virtio.close();
    this.#rxQueue = [];
    this.#kvmStats.close();
    for (const v of this.#vcpus) v.close();
    for (const i of this.#irqs) i.close();
    this.#vm.close();
    this.#mem.close();
    this.#kvm.close();
  }
}
