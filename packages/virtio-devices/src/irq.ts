import { EventFd } from "@ts-vmm/vmm-sys-util";
import type { IrqLine } from "./device.js";

/**
 * An {@link IrqLine} backed by an eventfd: register `eventFd` with KVM as an
 * irqfd on a GSI (`VmFd.registerIrqfd`) and every `trigger()` is one eventfd
 * write that KVM turns into an interrupt, without a thread hop.
 */
export class EventFdIrqLine implements IrqLine {
  /** The eventfd to register as an irqfd. */
  readonly eventFd: EventFd;
  /** Times the line was raised. */
  count = 0;

  /** @param eventFd - an eventfd (default: a new non-blocking one owned by this line). */
  constructor(eventFd: EventFd = new EventFd({ nonBlocking: true })) {
    this.eventFd = eventFd;
  }

  /** Raises the line: one eventfd write (a full counter, EAGAIN, means an interrupt is already pending and is ignored). */
  trigger(): void {
    this.count++;
    try {
      this.eventFd.write(1);
    } catch {
      // EAGAIN: the counter is at its maximum, an interrupt is already pending.
    }
  }

  /** Closes the eventfd. */
  close(): void {
    this.eventFd.close();
  }
}
