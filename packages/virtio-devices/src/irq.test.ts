import { describe, expect, it } from "vitest";
import { EventFd } from "@ts-vmm/vmm-sys-util";
import { EventFdIrqLine } from "./index.js";

describe("EventFdIrqLine", () => {
  it("each trigger adds one to the eventfd counter (what KVM's irqfd consumes)", () => {
    const line = new EventFdIrqLine();
    expect(line.eventFd.tryRead()).toBeNull();
    line.trigger();
    line.trigger();
    line.trigger();
    expect(line.eventFd.tryRead()).toBe(3n);
    expect(line.count).toBe(3);
    line.close();
    expect(line.eventFd.closed).toBe(true);
  });

  it("a full counter does not throw (an interrupt is already pending)", () => {
    const fd = new EventFd({ nonBlocking: true });
    fd.write(0xffff_ffff_ffff_fffen);
    const line = new EventFdIrqLine(fd);
    expect(() => line.trigger()).not.toThrow();
    fd.close();
  });
});
