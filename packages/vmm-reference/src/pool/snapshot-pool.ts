// A pool of VMs restored from one snapshot (the "microVM farm"): `size` of
// them are kept restored and not yet run (KVM state set, memory mapped
// MAP_PRIVATE over the shared memory file, nothing executing), each with a vCPU
// worker prestarted for it; take() hands one out by running it, and a
// replacement is restored in the background. See DESIGN.md, "Snapshot pool".
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { join, resolve as resolvePath } from "node:path";
import { VmmError } from "../error.js";
import type { RunResult } from "../run-result.js";
import { absoluteNow } from "../startup-trace.js";
import { Vmm } from "../vmm.js";
import { MAX_PRESTARTED, prestartVcpuWorkers, prestartedVcpuWorkers } from "../worker-pool.js";

/** Most VMs a pool keeps ready. */
export const MAX_POOL_SIZE = 64;
/** Most VMs a pool lets run at once (the default of {@link SnapshotPoolOptions.maxRunning}). */
export const DEFAULT_POOL_MAX_RUNNING = 64;
/** The upper bound of {@link SnapshotPoolOptions.maxRunning}. */
export const MAX_POOL_RUNNING = 1024;

/** What {@link SnapshotPool.create} needs. */
export interface SnapshotPoolOptions {
  /** The state file (as {@link Vmm.restore}). */
  readonly snapshotPath: string;
  /** The memory file; every VM of the pool maps it MAP_PRIVATE, so they share its page cache. */
  readonly memFilePath: string;
  /** VMs kept restored and ready (1 to {@link MAX_POOL_SIZE}). */
  readonly size: number;
  /** VMs handed out and still running at most (1 to {@link MAX_POOL_RUNNING}, default {@link DEFAULT_POOL_MAX_RUNNING}); take() beyond it fails with `PoolFull`. */
  readonly maxRunning?: number;
  /**
   * Where each VM's serial output (COM1) goes: a directory gets one file per
   * VM, `<dir>/<id>.log` (created or truncated, mode 0600, closed when the VM
   * ends); a function gets every chunk; without either it is discarded.
   */
  readonly serial?: string | ((id: string, bytes: Uint8Array) => void);
}

/** A VM the pool handed out. */
export interface PooledVm {
  /** Unique in this pool (`vm-1`, `vm-2`, …; never reused). */
  readonly id: string;
  /** The VM (running). Stop it with {@link SnapshotPool.release} or `vmm.stop()`; the pool closes it when its run ends. */
  readonly vmm: Vmm;
  /** When take() was called, in ms since the Unix epoch (the clock of {@link Vmm.whenRunning}). */
  readonly requestedAt: number;
  /** When its vCPU 0 entered KVM_RUN ({@link Vmm.whenRunning}). */
  readonly runningAt: number;
  /** Whether it came ready from the pool (false: restored on demand because none was ready). */
  readonly fromPool: boolean;
  /** Where its serial output goes: the log file's path, or undefined. */
  readonly logPath: string | undefined;
  /** The run's result; settles when the guest ends or the VM is stopped (the VM is closed by then). */
  readonly result: Promise<RunResult>;
}

/** A pool's counters. */
export interface SnapshotPoolStats {
  /** VMs ready now. */
  readonly ready: number;
  /** VMs handed out and still running. */
  readonly running: number;
  /** VMs handed out so far. */
  readonly taken: number;
  /** Of those, how many were restored on demand (none was ready). */
  readonly takenCold: number;
  /** Background restores that failed. */
  readonly refillFailures: number;
  /** The last background restore's error, if the last one failed. */
  readonly lastRefillError: string | undefined;
}

interface Running {
  vm: PooledVm;
  logFd: number | undefined;
  logError: string | undefined;
}

const checkWhole = (name: string, v: unknown, lo: number, hi: number): number => {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) throw new VmmError("InvalidConfig", `${name} must be a whole number from ${lo} to ${hi}, got ${String(v)}`);
  return v;
};

/**
 * VMs restored from one snapshot, kept ready and handed out one per
 * {@link SnapshotPool.take}. Bounded: at most `size` ready and `maxRunning`
 * running; every VM is closed when its run ends (its fds, its mapping, its log
 * file), and {@link SnapshotPool.close} closes all of them.
 */
export class SnapshotPool {
  readonly #opts: SnapshotPoolOptions;
  readonly #size: number;
  readonly #maxRunning: number;
  readonly #vcpus: number;
  readonly #ready: Vmm[] = [];
  readonly #running = new Map<string, Running>();
  #seq = 0;
  #taken = 0;
  #takenCold = 0;
  #refillFailures = 0;
  #lastRefillError: string | undefined;
  #refilling = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(opts: SnapshotPoolOptions, size: number, maxRunning: number, first: Vmm) {
    this.#opts = opts;
    this.#size = size;
    this.#maxRunning = maxRunning;
    this.#vcpus = first.vcpuCount;
    this.#ready.push(first);
  }

  /**
   * Restores the first VM now (so a bad snapshot fails here), then the rest
   * one per event-loop turn; resolves once `size` are ready.
   * @throws {@link VmmError} `InvalidConfig` for bad options; the codes of
   *   {@link Vmm.restore} (`SnapshotInvalid`, `FileNotReadable`, …) for the snapshot.
   */
  static async create(opts: SnapshotPoolOptions): Promise<SnapshotPool> {
    const size = checkWhole("size", opts.size, 1, MAX_POOL_SIZE);
    const maxRunning = checkWhole("maxRunning", opts.maxRunning ?? DEFAULT_POOL_MAX_RUNNING, 1, MAX_POOL_RUNNING);
    if (opts.serial !== undefined && typeof opts.serial !== "string" && typeof opts.serial !== "function") throw new VmmError("InvalidConfig", "serial must be a directory path or a function");
    // Absolute paths: refills and takes happen later, whatever the cwd is then.
    const files = { snapshotPath: resolvePath(opts.snapshotPath), memFilePath: resolvePath(opts.memFilePath) };
    const serial = typeof opts.serial === "string" ? resolvePath(opts.serial) : opts.serial;
    const pool = new SnapshotPool({ ...opts, ...files, ...(serial !== undefined ? { serial } : {}) }, size, maxRunning, Vmm.restore(files));
    pool.#prestart();
    await pool.#fill();
    return pool;
  }

  /** VMs ready now. */
  get ready(): number {
    return this.#ready.length;
  }

  /** The pool's counters. */
  stats(): SnapshotPoolStats {
    return {
      ready: this.#ready.length,
      running: this.#running.size,
      taken: this.#taken,
      takenCold: this.#takenCold,
      refillFailures: this.#refillFailures,
      lastRefillError: this.#lastRefillError,
    };
  }

  /** The VMs handed out and running (their guest ran), oldest first. */
  list(): PooledVm[] {
    return [...this.#running.values()].filter((r) => !Number.isNaN(r.vm.runningAt)).map((r) => r.vm);
  }

  /** The running VM `id` (once its guest ran), or undefined. */
  get(id: string): PooledVm | undefined {
    const r = this.#running.get(id);
    return r === undefined || Number.isNaN(r.vm.runningAt) ? undefined : r.vm;
  }

  /**
   * Hands out a VM: a ready one (else one restored now), run, resolved once
   * its guest runs ({@link Vmm.whenRunning}); a replacement is restored in the
   * background.
   * @throws {@link VmmError} (as a rejection) `InvalidState` once the pool is closed;
   *   `PoolFull` with `maxRunning` VMs running; a restore's codes when none was
   *   ready and restoring one failed; `InvalidState` if the guest ended before it ran.
   */
  async take(): Promise<PooledVm> {
    const requestedAt = absoluteNow();
    if (this.#closed) throw new VmmError("InvalidState", "the snapshot pool is closed");
    if (this.#running.size >= this.#maxRunning) throw new VmmError("PoolFull", `the snapshot pool has ${this.#running.size} VMs running, its limit (maxRunning ${this.#maxRunning}); release one first`);
    let vmm = this.#ready.shift();
    const fromPool = vmm !== undefined;
    vmm ??= Vmm.restore({ snapshotPath: this.#opts.snapshotPath, memFilePath: this.#opts.memFilePath });
    const id = `vm-${++this.#seq}`;
    let logFd: number | undefined;
    let logPath: string | undefined;
    if (typeof this.#opts.serial === "string") {
      logPath = join(this.#opts.serial, `${id}.log`);
      try {
        logFd = openSync(logPath, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
      } catch (e) {
        if (fromPool) this.#ready.unshift(vmm); // unused: back to the pool
        else vmm.close();
        throw new VmmError("FileNotWritable", `cannot open the serial log ${logPath}: ${(e as Error).message}`, { cause: e });
      }
    }
    this.#taken++;
    if (!fromPool) this.#takenCold++;
    let entry!: Running;
    const serialFn = typeof this.#opts.serial === "function" ? this.#opts.serial : undefined;
    const serial = (bytes: Uint8Array): void => {
      if (serialFn) serialFn(id, bytes);
      else if (entry.logFd !== undefined) {
        try {
          for (let off = 0; off < bytes.byteLength;) off += writeSync(entry.logFd, bytes, off);
        } catch (e) {
          // The log is lost from here on: say so in the VM's info, stop writing.
          entry.logError = `writing ${logPath ?? "the log"} failed: ${(e as Error).message}; later output is dropped`;
          this.#closeLog(entry);
        }
      }
    };
    const result = vmm.run({ serial }).finally(() => {
      vmm.close();
      this.#closeLog(entry);
      this.#running.delete(id);
    });
    const pending = { id, vmm, requestedAt, runningAt: Number.NaN, fromPool, logPath, result };
    entry = { vm: pending, logFd, logError: undefined };
    this.#running.set(id, entry);
    let runningAt: number;
    try {
      runningAt = await vmm.whenRunning();
    } catch (e) {
      vmm.stop();
      await result.catch(() => undefined);
      throw e;
    } finally {
      // After the hand-out, not beside it: a restore is a few ms of this thread's
      // time, and the worker starting the guest should not compete with it for a CPU.
      this.#scheduleRefill();
    }
    const vm: PooledVm = { ...pending, runningAt };
    entry.vm = vm;
    return vm;
  }

  /**
   * Stops the running VM `id` (as `vmm.stop()`); resolves with its run's result once it is closed.
   * @throws {@link VmmError} `UnknownVm` (as a rejection) if no running VM has that id.
   */
  async release(id: string): Promise<RunResult> {
    const r = this.#running.get(id);
    if (r === undefined) throw new VmmError("UnknownVm", `no running VM has id ${JSON.stringify(id)}`);
    r.vm.vmm.stop();
    return r.vm.result;
  }

  /** The serial log's write error of VM `id`, if writing its log failed. */
  logError(id: string): string | undefined {
    return this.#running.get(id)?.logError;
  }

  /**
   * Closes every ready VM and stops every running one; resolves once all are
   * closed. take() fails afterwards. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      for (const v of this.#ready.splice(0)) v.close();
      const runs = [...this.#running.values()].map((r) => {
        r.vm.vmm.close(); // stops it; released when its workers have left KVM_RUN
        return r.vm.result.catch(() => undefined);
      });
      await Promise.all(runs);
    })();
    return this.#closing;
  }

  #closeLog(r: Running | undefined): void {
    if (r?.logFd === undefined) return;
    const fd = r.logFd;
    r.logFd = undefined;
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }

  /** Keeps a prestarted worker for each vCPU of each ready VM (up to the process's limit). */
  #prestart(): void {
    const want = Math.min(MAX_PRESTARTED, (this.#ready.length + 1) * this.#vcpus);
    const have = prestartedVcpuWorkers();
    if (have < want) prestartVcpuWorkers(want - have);
  }

  #scheduleRefill(): void {
    if (this.#refilling || this.#closed) return;
    this.#refilling = true;
    void this.#fill().finally(() => {
      this.#refilling = false;
    });
  }

  /** Restores VMs, one per event-loop turn (so requests are served between them), until `size` are ready. */
  async #fill(): Promise<void> {
    while (!this.#closed && this.#ready.length < this.#size) {
      await new Promise((r) => setImmediate(r));
      if (this.#closed) return;
      try {
        const v = Vmm.restore({ snapshotPath: this.#opts.snapshotPath, memFilePath: this.#opts.memFilePath });
        if (this.#closed) {
          v.close();
          return;
        }
        this.#ready.push(v);
        this.#lastRefillError = undefined;
      } catch (e) {
        // Stop refilling until the next take(): a snapshot that went bad must not spin.
        this.#refillFailures++;
        this.#lastRefillError = (e as Error).message;
        return;
      }
      this.#prestart();
    }
  }
}
