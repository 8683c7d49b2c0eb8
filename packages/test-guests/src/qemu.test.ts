import { describe, expect, it } from "vitest";
import type { LaunchSpec } from "./launcher.js";
import { qemuArgs, qemuLauncher } from "./qemu.js";

const spec: LaunchSpec = {
  kernel: "/k/guest.elf",
  cmdline: "mode=selftest",
  memMiB: 64,
  vcpus: 2,
  devices: [
    { kind: "blk", path: "/d/disk.img", readOnly: true },
    { kind: "rng" },
    { kind: "net" },
    { kind: "net", tap: "tap7" },
    { kind: "console", socketPath: "/s/c.sock" },
    { kind: "balloon" },
  ],
  extraArgs: ["-S"],
};

describe("qemuArgs", () => {
  const args = qemuArgs(spec);
  const joined = args.join(" ");

  it("uses microvm without ACPI, modern virtio-mmio, debug-exit and serial on stdout", () => {
    expect(args.slice(0, 2)).toEqual(["-M", "microvm,acpi=off"]);
    expect(joined).toContain("-global virtio-mmio.force-legacy=false");
    expect(joined).toContain("-device isa-debug-exit,iobase=0xf4,iosize=4");
    expect(joined).toContain("-chardev stdio,id=ser0,signal=off -serial chardev:ser0");
    expect(joined).toContain("-m 64M -smp 2");
    expect(joined).toContain("-kernel /k/guest.elf");
    expect(args[args.indexOf("-append") + 1]).toBe("mode=selftest");
    expect(args.at(-1)).toBe("-S");
  });

  it("maps each device to its virtio-mmio QEMU device", () => {
    expect(joined).toContain("-drive if=none,id=blk0,file=/d/disk.img,format=raw,readonly=on -device virtio-blk-device,drive=blk0");
    expect(joined).toContain("-device virtio-rng-device,rng=rng1");
    expect(joined).toContain("-netdev user,id=net2 -device virtio-net-device,netdev=net2");
    expect(joined).toContain("-netdev tap,id=net3,ifname=tap7,script=no,downscript=no");
    expect(joined).toContain("-chardev socket,id=con4,path=/s/c.sock");
    expect(joined).toContain("-device virtconsole,chardev=con4,bus=vser4.0");
    expect(joined).toContain("-device virtio-balloon-device");
  });
});

describe("qemuLauncher", () => {
  it("never claims a virtio-rtc device (QEMU 7.2 has none)", () => {
    expect(qemuLauncher.provides).not.toContain("rtc");
    expect(qemuLauncher.provides).toEqual(expect.arrayContaining(["blk", "rng", "console", "net", "balloon"]));
  });

  it("decodes isa-debug-exit's (value << 1) | 1 exit status", async () => {
    const plan = await qemuLauncher.plan(spec);
    if (plan.kind !== "process") throw new Error("expected a process plan");
    expect(plan.guestExitValue(1, null)).toBe(0);
    expect(plan.guestExitValue(0xff, null)).toBe(0x7f);
    expect(plan.guestExitValue(0, null)).toBeNull();
    expect(plan.guestExitValue(null, "SIGKILL")).toBeNull();
    expect(plan.exitValueBits).toBe(7); // (value << 1) | 1 in an 8-bit status
  });
});
