/** The device's handlers the event handler routes to. */
export interface VsockHandlers {
  /** Fill rx buffers with packets for the guest. */
  rx(): void;
  /** Take packets from the tx queue. */
  tx(): void;
  /** Deliver a pending event on the event queue. */
  event(): void;
}

/** Queue indexes of virtio-vsock (§5.10.2). */
export const VSOCK_RX_QUEUE = 0;
/** The guest's transmit queue. */
export const VSOCK_TX_QUEUE = 1;
/** The event queue (device to driver, 4-byte events). */
export const VSOCK_EVENT_QUEUE = 2;

/**
 * Routes queue notifications and backend wake-ups to the device. Wake-ups
 * from the backend (host socket events) are coalesced into one
 * `setImmediate` per kind, so a burst of socket events costs one rx pass and
 * no handler runs re-entrantly inside another. `cancel()` (device reset)
 * drops what is scheduled. Holds no device logic.
 */
export class VsockEventHandler {
  readonly #h: VsockHandlers;
  #epoch = 0;
  #rxScheduled = false;
  #txScheduled = false;

  /** @param handlers - the device's rx, tx and event paths. */
  constructor(handlers: VsockHandlers) {
    this.#h = handlers;
  }

  /** A queue notification from the transport. */
  queueNotify(index: number): void {
    if (index === VSOCK_RX_QUEUE) this.#h.rx();
    else if (index === VSOCK_TX_QUEUE) this.#h.tx();
    else if (index === VSOCK_EVENT_QUEUE) this.#h.event();
  }

  /** The backend has packets for the guest: run rx on the next turn (once). */
  wakeRx(): void {
    if (this.#rxScheduled) return;
    this.#rxScheduled = true;
    const e = this.#epoch;
    setImmediate(() => {
      if (e !== this.#epoch) return;
      this.#rxScheduled = false;
      this.#h.rx();
    });
  }

  /** tx may go on (backend drained, or a pass hit its per-turn bound): run tx on the next turn (once). */
  wakeTx(): void {
    if (this.#txScheduled) return;
    this.#txScheduled = true;
    const e = this.#epoch;
    setImmediate(() => {
      if (e !== this.#epoch) return;
      this.#txScheduled = false;
      this.#h.tx();
    });
  }

  /** Forgets scheduled work (device reset). */
  cancel(): void {
    this.#epoch++;
    this.#rxScheduled = false;
    this.#txScheduled = false;
  }
}
