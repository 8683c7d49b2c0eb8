import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The native addon, as TypeScript sees it. Every function returns the ioctl's
 * non-negative result, or `-errno`; it throws a TypeError/RangeError only for
 * arguments that could make the kernel touch memory outside a buffer (a
 * second line behind the TypeScript checks).
 */
export interface KvmNative {
  /** open(path, O_RDWR | O_CLOEXEC). */
  open(path: string): number;
  close(fd: number): number;
  /** ioctl(fd, request, arg) for _IO requests with an integer argument. */
  ioctlVal(fd: number, request: number, arg: number): number;
  /** ioctl(fd, request, buf); buf must hold what the kernel will access (and at least minBytes). */
  ioctlBuf(fd: number, request: number, buf: Uint8Array, minBytes?: number): number;
  /** Writes data's address at buf[ptrOffset] (u64), then ioctl(fd, request, buf). */
  ioctlBufPtr(fd: number, request: number, buf: Uint8Array, ptrOffset: number, data: Uint8Array, dataMinBytes: number): number;
  /**
   * KVM_X86_SET_MSR_FILTER: `filter` is struct kvm_msr_filter (392 bytes); the addon writes the
   * address of `bitmaps[i]` into range i (NULL where nmsrs is 0) after checking that it holds
   * the `ceil(nmsrs / 64) * 8` bytes the kernel copies. At most 16 bitmaps. Optional so that
   * fakes written before it may leave it out.
   */
  ioctlMsrFilter?(fd: number, filter: Uint8Array, bitmaps: readonly Uint8Array[]): number;
  /** ioctl(fd, KVM_RUN, 0). */
  run(fd: number): number;
  /** The CPUID instruction (leaf, subleaf) on this thread's CPU; EAX..EDX into out[0..3]. Optional so that fakes may leave it out. */
  cpuid?(leaf: number, subleaf: number, out: Uint32Array): number;
  /** Records the calling thread's `worker_threads.threadId` (for kickRunning). Absent in injected bindings. */
  setThreadId?(threadId: number): void;
  /**
   * Marks the threads of `threadId` (-1: all) stopping and signals those inside KVM_RUN
   * until none is; returns how many were still inside after ~2 s, or -EINVAL. Absent in injected bindings.
   */
  kickRunning?(signo: number, threadId: number): number;
  /** arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, feature). Absent in injected bindings. */
  requestGuestXcompPerm?(feature: number): number;
}

let override: KvmNative | undefined;
let loaded: KvmNative | undefined;

/**
 * Replaces the addon (for tests of the TypeScript layer), or restores the
 * real one with `undefined`.
 */
export function setNativeBinding(binding: KvmNative | undefined): void {
  override = binding;
}

/** The addon: the override if set, else build/Release/kvm_ioctls.node of this package. @internal */
export function native(): KvmNative {
  if (override) return override;
  if (!loaded) {
    const here = dirname(fileURLToPath(import.meta.url));
    const require = createRequire(import.meta.url);
    // src/ and dist/ both sit one level below the package root.
    loaded = require(join(here, "..", "build", "Release", "kvm_ioctls.node")) as KvmNative;
  }
  return loaded;
}
