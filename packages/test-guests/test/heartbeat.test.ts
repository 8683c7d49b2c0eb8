import { describe, expect, it } from "vitest";
import { parseHeartbeats } from "../src/heartbeat.js";
import { BEAT_MARKER } from "../src/linux-kit.js";

describe("parseHeartbeats", () => {
  it("reads beats (with the disk fields every 4th), the kernel messages and the last count; a beat cut short is not one", () => {
    const text = [
      "TS-VMM-INIT-OK-SHELL",
      `${BEAT_MARKER} n=1 up=30.12`,
      `${BEAT_MARKER} n=2 up=3`, // cut by a snapshot: its digits went on in the next VMM
      `0.71`,
      `${BEAT_MARKER} n=3 up=31.40`,
      `${BEAT_MARKER} n=4 up=31.95 disk=abc123 reads=17`,
      `${BEAT_MARKER}-DMESG [   32.001] clocksource: timekeeping watchdog`,
      `${BEAT_MARKER}-DONE n=4`,
    ];
    const log = parseHeartbeats(text.map((t, i) => ({ text: t, tMs: i * 10 })));
    expect(log.beats).toEqual([
      { n: 1, up: 30.12, tMs: 10 },
      { n: 3, up: 31.4, tMs: 40 },
      { n: 4, up: 31.95, disk: "abc123", reads: 17, tMs: 50 },
    ]);
    expect(log.dmesg).toEqual(["[   32.001] clocksource: timekeeping watchdog"]);
    expect(log.done).toBe(4);
    expect(parseHeartbeats([{ text: "nothing", tMs: 0 }])).toEqual({ beats: [], dmesg: [], done: null });
  });
});
