import { existsSync } from "node:fs";
import type { DeviceKind, LaunchSpec, ProcessPlan, ResolvedDevice, VmmLauncher } from "./launcher.js";

/**
 * The chardev QEMU's 8250 writes to (stdout). QEMU makes its stdout non-blocking and its
 * 16550 drops a byte after four failed writes in a row, so a reader that falls behind can
 * lose output; the nested harness adds a `logfile=` to this chardev, whose count (failed
 * writes included) it reports beside L1's and the host's (nested.ts, `serialCopies`).
 */
export const QEMU_SERIAL_CHARDEV = "stdio,id=ser0,signal=off";

/** QEMU binary used by {@link qemuLauncher} (Debian's qemu-system-x86, 7.2 here). */
export const QEMU_BINARY = "qemu-system-x86_64";

/**
 * Devices QEMU 7.2 microvm can attach: no virtio-rtc exists in QEMU 7.2, and
 * vsock needs the host's vhost-vsock (/dev/vhost-vsock).
 */
export function qemuProvides(): DeviceKind[] {
  const kinds: DeviceKind[] = ["blk", "rng", "console", "net", "balloon"];
  if (existsSync("/dev/vhost-vsock")) kinds.push("vsock");
  return kinds;
}

function deviceArgs(d: ResolvedDevice, i: number): string[] {
  switch (d.kind) {
    case "blk":
      return [
        "-drive", `if=none,id=blk${i},file=${d.path},format=raw${d.readOnly ? ",readonly=on" : ""}`,
        "-device", `virtio-blk-device,drive=blk${i}`,
      ];
    case "rng":
      return ["-object", `rng-random,id=rng${i},filename=/dev/urandom`, "-device", `virtio-rng-device,rng=rng${i}`];
    case "net":
      return [
        "-netdev", d.tap ? `tap,id=net${i},ifname=${d.tap},script=no,downscript=no` : `user,id=net${i}`,
        "-device", `virtio-net-device,netdev=net${i}`,
      ];
    case "console":
      return [
        "-chardev", `socket,id=con${i},path=${d.socketPath}`,
        "-device", `virtio-serial-device,id=vser${i},max_ports=1`,
        "-device", `virtconsole,chardev=con${i},bus=vser${i}.0`,
      ];
    case "vsock":
      return ["-device", `vhost-vsock-device,guest-cid=${d.cid}`];
    case "balloon":
      return ["-device", "virtio-balloon-device"];
    case "rtc":
      return [];
  }
}

/**
 * The QEMU command line for a launch: microvm with ACPI off (so microvm puts
 * `virtio_mmio.device=` entries on the guest command line), modern
 * virtio-mmio (`force-legacy=false`; QEMU 7.2 defaults to version 1),
 * isa-debug-exit on 0xf4, the 8250 on stdout, KVM with the host CPU
 * (`-arch-capabilities`: this machine's KVM refuses MSR 0x10a, which makes
 * QEMU abort at start-up).
 */
export function qemuArgs(spec: LaunchSpec): string[] {
  const args = [
    "-M", "microvm,acpi=off",
    "-enable-kvm", "-cpu", "host,-arch-capabilities",
    "-m", `${spec.memMiB}M`, "-smp", String(spec.vcpus),
    "-nodefaults", "-no-user-config", "-display", "none",
    "-chardev", QEMU_SERIAL_CHARDEV, "-serial", "chardev:ser0",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    "-global", "virtio-mmio.force-legacy=false",
    "-kernel", spec.kernel,
  ];
  if (spec.initrd) args.push("-initrd", spec.initrd);
  args.push("-append", spec.cmdline);
  spec.devices.forEach((d, i) => args.push(...deviceArgs(d, i)));
  args.push(...spec.extraArgs);
  return args;
}

/**
 * The QEMU implementation of {@link VmmLauncher}. isa-debug-exit makes QEMU
 * exit with `(value << 1) | 1`, so an odd exit code carries the guest's value;
 * an even code (0 on power-off) or a signal maps to null. Exit code 1 is
 * ambiguous (guest value 0, or QEMU's own start-up error, a missing kernel
 * for one): runGuest only counts it together with the guest's own
 * `RESULT exit=0` line (`GuestRun.guestExit`).
 */
export const qemuLauncher: VmmLauncher = {
  name: "qemu",
  get provides() {
    return qemuProvides();
  },
  plan(spec: LaunchSpec): ProcessPlan {
    return {
      kind: "process",
      file: QEMU_BINARY,
      args: qemuArgs(spec),
      exitValueBits: 7,
      guestExitValue(code) {
        if (code === null || (code & 1) === 0) return null;
        return code >> 1;
      },
    };
  },
};
