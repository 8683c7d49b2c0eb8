import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { KvmError } from "./errors.js";

/**
 * The native addon, as TypeScript sees it. Every function returns the ioctl's
 * non-negative result, or `-errno`; it throws a TypeError/RangeError only for
 * arguments that could make the kernel touch memory outside a buffer (a
 * second line behind the TypeScript checks).
 */
export interface KvmNative {
  /** open(path, O_RDWR | O_CLOEXEC). */
  open(path: string): number;
  /** close(fd). */
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

/**
 * The addon: the override if set, else this package's own, found by node-gyp-build:
 * `build/Release/kvm_ioctls.node` (built from source) first, then
 * `prebuilds/<platform>-<arch>/node.abi<N>.node` for this Node's ABI.
 * @throws KvmError `Unsupported` if neither exists or loads; the message says how to build it
 * @internal
 */
export function native(): KvmNative {
  if (override) return override;
  if (!loaded) {
    const require = createRequire(import.meta.url);
    const load = require("node-gyp-build") as (dir: string) => unknown;
    // src/ and dist/ both sit one level below the package root.
    const root = fileURLToPath(new URL("..", import.meta.url));
    try {
      loaded = load(root) as KvmNative;
    } catch (cause) {
      const tuple = `${process.platform}-${process.arch}`;
      const abi = process.versions.modules;
      throw new KvmError(
        "Unsupported",
        `@ts-vmm/kvm-ioctls: no native addon loads for Node ${process.version} (${tuple}, ABI ${abi}) in ${root}: ` +
          `neither build/Release/kvm_ioctls.node nor prebuilds/${tuple}/node.abi${abi}.node. ` +
          "Build it from source (needs python3, make and a C++ compiler): `npm rebuild @ts-vmm/kvm-ioctls`. " +
          "With pnpm, allow its install script first (`pnpm approve-builds`, or list @ts-vmm/kvm-ioctls in " +
          "`onlyBuiltDependencies`), then `pnpm rebuild @ts-vmm/kvm-ioctls`.",
        { cause },
      );
    }
  }
  return loaded;
}
