import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { Kvm, type VcpuFd, type VmFd } from "@ts-vmm/kvm-ioctls";
import { loadLinux, ramRegions, type LinuxBoot } from "@ts-vmm/linux-loader";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory";
import { MMIO_MAILBOX_BYTES } from "./devices/mmio-mailbox.js";
import { VirtioManager, type VirtioDeviceConfig } from "./devices/virtio-manager.js";
import { VmmError } from "./error.js";
import type { RunResult } from "./run-result.js";
import type { VcpuWorkerData, VcpuWorkerMessage } from "./vcpu-worker.js";

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
   * Serial output flow control: at most this many bytes of COM1 output are
   * waiting for `io.serial` at a time; beyond it the vCPU waits (as behind a
   * UART with flow control), so a guest flooding the serial port cannot grow
   * the VMM's memory without bound. Default 1 MiB.
   */
  readonly serialBacklogBytes?: number;
  /** virtio-mmio devices, in the order they get windows and IRQs (see devices/virtio-manager.ts). */
  readonly virtio?: readonly VirtioDeviceConfig[];
}

/** Where the guest's serial output goes. */
export interface VmIo {
  /** Bytes the guest wrote to COM1. */
  serial(bytes: Uint8Array): void;
}

const MiB = 1024 * 1024;
/** Where KVM puts the real-mode TSS and identity map on Intel hosts: just below 4 GiB, inside our MMIO hole. */
const TSS_ADDR = 0xfffb_d000;

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

/** The vCPU worker's compiled entry: dist/ holds it whether this module runs from src/ or dist/. */
const WORKER_URL = new URL("../dist/vcpu-worker.js", import.meta.url);

/**
 * A one-vCPU virtual machine: guest memory, the loaded kernel and a vCPU
 * running in a worker thread with a serial port (COM1) and the debug-exit
 * port. This is the reference VMM's first slice: virtio-mmio devices,
 * interrupts from devices, SMP, the API socket and snapshots come with the
 * packages that provide them.
 */
export class Vmm {
  readonly #kvm: Kvm;
  readonly #vm: VmFd;
  readonly #mem: GuestMemoryMmap;
  readonly #vcpu: VcpuFd;
  readonly #stop = new SharedArrayBuffer(4);
  #worker: Worker | undefined;
  /** close() was called. */
  #closed = false;
  /** The fds are closed (at close(), or when the run in flight settles). */
  #released = false;
  /** A run is in flight: its worker may still call KVM_RUN on the vCPU fd. */
  #running = false;
  /** The boot layout the loader wrote. */
  readonly boot: LinuxBoot;

  readonly #backlog: number;
  /** Int32 cell: serial bytes posted by the worker and not yet consumed by io.serial. */
  readonly #serialPending = new SharedArrayBuffer(4);
  /** The virtio devices (served on this thread). */
  readonly virtio: VirtioManager;
  readonly #mmioMailbox = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);

  private constructor(kvm: Kvm, vm: VmFd, mem: GuestMemoryMmap, vcpu: VcpuFd, boot: LinuxBoot, backlog: number, virtio: VirtioManager) {
    this.virtio = virtio;
    this.#backlog = backlog;
    this.#kvm = kvm;
    this.#vm = vm;
    this.#mem = mem;
    this.#vcpu = vcpu;
    this.boot = boot;
  }

  /**
   * Creates the VM, loads the kernel and sets up the boot vCPU. Nothing runs
   * until {@link Vmm.run}.
   * @throws {@link VmmError} `InvalidConfig`, `FileNotReadable`, or `SetupFailed`
   * wrapping a KvmError, GuestMemoryError or LoaderError.
   */
  static create(config: VmConfig): Vmm {
    const memMiB = config.memMiB ?? 256;
    if (!Number.isInteger(memMiB) || memMiB < 2 || memMiB > 1024 * 1024) {
      throw new VmmError("InvalidConfig", `memMiB must be a whole number from 2 to 1048576, got ${String(memMiB)}`);
    }
    const backlog = config.serialBacklogBytes ?? 1 << 20;
    if (!Number.isInteger(backlog) || backlog < 1024 || backlog > 2 ** 30) {
      throw new VmmError("InvalidConfig", `serialBacklogBytes must be a whole number from 1024 to 2^30, got ${String(backlog)}`);
    }
    const kernel = bytesOf("kernel", config.kernel, memMiB * MiB);
    const initrd = config.initrd === undefined ? undefined : bytesOf("initrd", config.initrd, memMiB * MiB);
    let kvm: Kvm | undefined;
    let vm: VmFd | undefined;
    let mem: GuestMemoryMmap | undefined;
    let vcpu: VcpuFd | undefined;
    let virtio: VirtioManager | undefined;
    try {
      kvm = new Kvm();
      vm = kvm.createVm();
      vm.setTssAddress(TSS_ADDR);
      vm.createIrqChip();
      mem = GuestMemoryMmap.fromRanges(ramRegions(memMiB * MiB), { name: "guest-ram" });
      mem.regions.forEach((r, slot) => {
        if (r.hostAddress === undefined) throw new VmmError("SetupFailed", "guest memory region has no host mapping");
        // `buffer` (the mapping's SharedArrayBuffer) makes the slot hold the mapping alive:
        // KVM keeps only its address, and GC must not unmap memory the guest still maps.
        vm!.setUserMemoryRegion({ slot, guestPhysAddr: r.start, memory: { address: r.hostAddress, size: r.size, buffer: r.bytes.buffer } });
      });
      virtio = VirtioManager.create(vm, mem, config.virtio ?? []);
      const boot = loadLinux(mem, {
        virtioMmio: virtio.mmioDevices,
        virtioMmioOnCmdline: true,
        kernel,
        ...(initrd ? { initrd } : {}),
        cmdline: config.cmdline ?? "",
        cpus: 1,
      });
      vcpu = vm.createVcpu(0);
      vcpu.setCpuid2(kvm.getSupportedCpuid());
      vcpu.setSregs({ ...vcpu.getSregs(), ...boot.cpu.sregs });
      vcpu.setRegs(boot.cpu.regs);
      return new Vmm(kvm, vm, mem, vcpu, boot, backlog, virtio);
    } catch (e) {
      virtio?.close();
      vcpu?.close();
      mem?.close();
      vm?.close();
      kvm?.close();
      if (e instanceof VmmError) throw e;
      throw new VmmError("SetupFailed", `setting up the VM failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Runs the guest until it exits through the debug-exit port, shuts down,
   * fails, or {@link Vmm.stop} is called. Serial output goes to `io`; if
   * `io.serial` throws, the VM is stopped and the run ends with reason `Error`.
   * @throws {@link VmmError} `InvalidState` if the VM already ran or was closed.
   */
  run(io: VmIo): Promise<RunResult> {
    if (this.#closed || this.#worker) throw new VmmError("InvalidState", "a Vmm runs once; create another to boot again");
    const data: VcpuWorkerData = {
      vcpu: this.#vcpu.toTransferable(),
      stop: this.#stop,
      serialPending: this.#serialPending,
      serialBacklog: this.#backlog,
      mmioMailbox: this.#mmioMailbox,
      mmioWindows: this.virtio.windows,
    };
    this.virtio.serve(this.#mmioMailbox);
    const pending = new Int32Array(this.#serialPending);
    // The worker is compiled JS that imports the packages' dist builds: do not
    // inherit flags such as a test runner's --conditions pointing at sources.
    const worker = new Worker(WORKER_URL, { workerData: data, execArgv: [] });
    this.#worker = worker;
    this.#running = true;
    return new Promise<RunResult>((resolve) => {
      let done = false;
      const settle = (r: RunResult): void => {
        if (done) return;
        done = true;
        // The worker has left its KVM_RUN loop (it sent its result, or it is gone).
        this.#running = false;
        void worker.terminate();
        if (this.#closed) this.#release();
        resolve(r);
      };
      // A throwing io.serial would be an uncaught exception in this event
      // handler: stop the VM instead and report it as the run's error.
      let ioError: unknown;
      worker.on("message", (m: VcpuWorkerMessage) => {
        if (m.type === "serial") {
          try {
            if (ioError === undefined) io.serial(m.bytes);
          } catch (e) {
            ioError = e ?? new Error(String(e));
            this.stop();
          } finally {
            // Consumed: give the worker its credit back.
            Atomics.sub(pending, 0, m.bytes.byteLength);
            Atomics.notify(pending, 0);
          }
        } else if (ioError !== undefined) {
          settle({ reason: "Error", guestExitValue: null, detail: `the serial output callback threw: ${ioError instanceof Error ? ioError.message : String(ioError)}`, exits: m.result.exits });
        } else settle(m.result);
      });
      worker.on("error", (e) => settle({ reason: "Error", guestExitValue: null, detail: `vCPU worker failed: ${e.message}`, exits: {} }));
      worker.on("exit", (code) => settle({ reason: "Error", guestExitValue: null, detail: `vCPU worker exited with ${code} before the VM stopped`, exits: {} }));
    });
  }

  /** Asks the vCPU to stop: run() then resolves with reason `Stopped`. Safe to call more than once. */
  stop(): void {
    Atomics.store(new Int32Array(this.#stop), 0, 1);
    // Kick only a run in flight, or one not started yet (immediate_exit makes
    // its first KVM_RUN return). After the run the worker's recorded tid is
    // stale and may name another thread of this process by now.
    if (!this.#released && (this.#running || this.#worker === undefined)) this.#vcpu.kick();
  }

  /**
   * Releases the vCPU, the VM, guest memory and /dev/kvm. Idempotent. Called
   * while a run is in flight, it stops the vCPU first (run() resolves with
   * `Stopped`) and releases everything once the worker has left KVM_RUN, so
   * the worker never runs a closed (or reused) fd number.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#running) {
      this.stop();
      return;
    }
    this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.virtio.close();
    this.#vcpu.close();
    this.#vm.close();
    this.#mem.close();
    this.#kvm.close();
  }
}
