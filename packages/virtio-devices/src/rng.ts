import { randomFill } from "./random.js";
import { GuestMemoryError, sliceRange } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import { VIRTIO_ID_RNG } from "./constants.js";
import type { ActivateContext, DeviceState, VirtioDevice } from "./device.js";
import { VirtioDeviceError } from "./errors.js";

/** Most bytes filled per request (a guest asking for 4 GiB gets this much and the length says so). */
export const RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;

/**
 * virtio-rng (§5.4): fills each device-writable buffer with bytes from the
 * host CSPRNG (`crypto.randomFillSync`) straight into guest memory. One queue;
 * no config space, no features. A chain whose writable buffer is outside
 * guest memory, or a broken ring, sets DEVICE_NEEDS_RESET.
 */
export class VirtioRng implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_RNG;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [256];
  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  readonly deviceFeatures = 0n;
  /** {@inheritDoc VirtioDevice.configSize} */
  readonly configSize = 0;
  #active: { ctx: ActivateContext; queue: Queue; broken: boolean } | undefined;
  /** Bytes handed to the guest since creation. */
  bytesServed = 0;
  /** Requests (chains) completed since creation. */
  requestsServed = 0;

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }
  /** {@inheritDoc VirtioDevice.writeConfig} */
  writeConfig(_offset: number, _data: Uint8Array): void {}
  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const queue = ctx.queues[0];
    if (queue !== undefined) this.#active = { ctx, queue, broken: false };
  }
  /** {@inheritDoc VirtioDevice.reset} */
  reset(): void {
    this.#active = undefined;
  }
  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return false;
  }
  /** {@inheritDoc VirtioDevice.state} */
  state(): DeviceState {
    return { deviceType: VIRTIO_ID_RNG };
  }
  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    if (state.deviceType !== VIRTIO_ID_RNG) throw new VirtioDeviceError("InvalidState", "not a virtio-rng state");
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    const a = this.#active;
    if (index !== 0 || a === undefined || a.broken) return;
    const { mem } = a.ctx;
    try {
      let chain: DescriptorChain | undefined;
      // At most 64 requests (4 MiB) per turn of the event loop.
      let budget = 64;
      while ((chain = a.queue.popDescriptorChain(mem)) !== undefined) {
        if (--budget === 0) setImmediate(() => this.queueNotify(0)); // finish this one, then yield
        let left = Math.min(chain.writableLength, RNG_MAX_BYTES_PER_REQUEST);
        const views: Uint8Array[] = [];
        const dirty: [number, number][] = [];
        for (const d of chain.writable()) {
          if (left === 0) break;
          const n = Math.min(d.len, left);
          for (const v of sliceRange(mem, d.addr, n)) views.push(v);
          dirty.push([d.addr, n]);
          left -= n;
        }
        let written = 0;
        for (const v of views) {
          randomFill(v);
          written += v.length;
        }
        for (const [addr, n] of dirty) mem.markDirty?.(addr, n);
        this.bytesServed += written;
        this.requestsServed++;
        a.queue.addUsed(mem, chain.head, written);
        if (budget <= 0) break;
      }
      if (a.queue.needsNotification(mem)) a.ctx.interrupt.signalUsedQueue(0);
    } catch (e) {
      if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
      a.broken = true;
      a.ctx.interrupt.needsReset(`virtio-rng: ${e.message}`);
    }
  }
}
