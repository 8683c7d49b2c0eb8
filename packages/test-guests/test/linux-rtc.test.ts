import { execFileSync } from "node:child_process";
import { describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { linuxRtcGuest, RTC_MARKER, rtcLinuxProblems } from "../src/index.js";

const T0 = 1_796_000_000;
const good = (utc: number, tai = utc + 37, mono = 42.5): string =>
  [
    "booting",
    `${RTC_MARKER} virtio=virtio1 driver=virtio_rtc`,
    `${RTC_MARKER}-DMESG [    0.8] virtio_rtc: module verification failed: signature and/or required key missing - tainting kernel`,
    `${RTC_MARKER}-DMESG [    0.9] virtio1: some harmless note`,
    `${RTC_MARKER} ptp=ptp0 name="Virtio PTP type 0/variant 0" sec=${Math.floor(utc)} nsec=250000000 realtime=${Math.floor(utc)}`,
    `${RTC_MARKER} ptp=ptp1 name="Virtio PTP type 1/variant 0" sec=${Math.floor(tai)} nsec=260000000 realtime=${Math.floor(utc)}`,
    `${RTC_MARKER} ptp=ptp2 name="Virtio PTP type 2/variant 0" sec=${Math.floor(mono)} nsec=0 realtime=${Math.floor(utc)}`,
    `${RTC_MARKER} rtc=rtc0 name=rtc_cmos since_epoch=${Math.floor(utc)}`,
    `${RTC_MARKER} done ptp=3 rtc=1`,
  ].join("\r\n");

describe("rtcLinuxProblems (the nested virtio_rtc check)", () => {
  it("accepts three clocks that agree with the host", () => {
    const { readings, problems } = rtcLinuxProblems(good(T0 + 10), { hostStartS: T0, hostEndS: T0 + 100 });
    expect(problems).toEqual([]);
    expect(readings.map((r) => r.type)).toEqual([0, 1, 2]);
    expect(readings[0]!.seconds).toBeCloseTo(T0 + 10.25, 6);
  });

  it("rejects a UTC far from the host, a wrong TAI offset, a huge MONOTONIC, a failed read and a missing end", () => {
    expect(rtcLinuxProblems(good(T0 - 3600), { hostStartS: T0, hostEndS: T0 + 100 }).problems.join()).toMatch(/UTC clock read/);
    expect(rtcLinuxProblems(good(T0 + 10, T0 + 10), { hostStartS: T0, hostEndS: T0 + 100 }).problems.join()).toMatch(/TAI − UTC/);
    expect(rtcLinuxProblems(good(T0 + 10, T0 + 47, 1e6), { hostStartS: T0, hostEndS: T0 + 100 }).problems.join()).toMatch(/MONOTONIC/);
    const failed = good(T0 + 10).replace(/ptp=ptp1 (name="[^"]*") .*?(\r\n)/, "ptp=ptp1 $1 error=Operation not supported$2");
    expect(rtcLinuxProblems(failed, { hostStartS: T0, hostEndS: T0 + 100 }).problems.join()).toMatch(/ptp1 .*read failed: Operation not supported/);
    expect(rtcLinuxProblems(good(T0 + 10).replace("driver=virtio_rtc", "driver=none"), { hostStartS: T0, hostEndS: T0 + 100 }).problems).toEqual([
      "virtio1 (ID 17) is bound to none, not virtio_rtc",
    ]);
    const logged = good(T0 + 10).replace("some harmless note", "virtio_rtc: failed to register PTP clock 'x'");
    expect(rtcLinuxProblems(logged, { hostStartS: T0, hostEndS: T0 + 100 }).problems.join()).toMatch(/kernel: .*failed to register/);
    expect(rtcLinuxProblems("booting\n", { hostStartS: T0, hostEndS: T0 + 100 }).problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/done/), expect.stringMatching(/ID 17/), expect.stringMatching(/expected 3 virtio_rtc PTP clocks/)]),
    );
  });
});

describeWith({ tools: ["apt-get", "dpkg-deb", "cpio", "gzip", "xz", "busybox", "gcc", "make", "objcopy"] }, "linuxRtcGuest (sid's kernel and an out-of-tree virtio_rtc.ko from Debian packages)", () => {
  it("builds a virtio_rtc.ko for the kernel it boots, matching virtio device ID 17, into the initramfs", async () => {
    const g = await linuxRtcGuest();
    const info = execFileSync("sh", ["-c", 'objcopy -O binary -j .modinfo "$1" /dev/stdout | tr "\\0" "\\n"', "sh", g.kernel.virtioRtcModule], { encoding: "utf8" }).split("\n");
    expect(info).toContain("name=virtio_rtc");
    expect(info).toContain("alias=virtio:d00000011v*");
    expect(info).toContain(`vermagic=${g.kernel.version} SMP preempt mod_unload `);
    // PTP and the RTC class are built in, so nothing else has to be loaded first.
    expect(info).toContain("depends=");
    const list = execFileSync("sh", ["-c", `gzip -dc "$1" | cpio -t --quiet`, "sh", g.initramfs], { encoding: "utf8" }).split("\n");
    expect(list).toEqual(expect.arrayContaining(["init", "bin/tsvmm-ptp-read", "lib/modules/virtio_mmio.ko", "lib/modules/virtio_rtc.ko"]));
    const order = execFileSync("sh", ["-c", `gzip -dc "$1" | cpio -i --quiet --to-stdout etc/modules-load`, "sh", g.initramfs], { encoding: "utf8" }).trim().split("\n");
    expect(order.at(-1)).toBe("virtio_rtc");
    expect(order.indexOf("virtio_mmio")).toBeGreaterThanOrEqual(0);
    const again = await linuxRtcGuest();
    expect(again.initramfs).toBe(g.initramfs);
  }, 600_000);
});
