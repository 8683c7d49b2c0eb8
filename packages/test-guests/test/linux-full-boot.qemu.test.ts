import { randomBytes } from "node:crypto";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import {
  CPU_MARKER,
  DISK_MARKER,
  INIT_MARKER,
  dataDisk,
  hostHasVirtualizationExtensions,
  linuxGuest,
  runGuest,
  runNestedUntilSound,
  type GuestRun,
  type LinuxGuest,
} from "../src/index.js";

/*
 * The Debian 6.12 bzImage with the busybox initramfs, booted by QEMU with KVM
 * to /init's shell, with virtio-blk, -rng and -net found by Linux's drivers
 * (/init mounts the ext2 disk on virtio-blk and prints a file from it),
 * the vCPUs and the CPU flags in /proc/cpuinfo, and `poweroff -f` ending QEMU
 * with status 0 (the same checks the reference VMM's full-boot test makes).
 *
 * Where /proc/cpuinfo lists vmx or svm, QEMU runs on the host's KVM directly.
 * Elsewhere (this machine: a nested PVM KVM that emulates guest CPL0) it runs
 * in the nested tier: inside an L1 Linux under QEMU TCG with emulated SVM,
 * where kvm-amd gives a hardware-style /dev/kvm (runNested). Two L1 boots:
 * -smp 1 with a 1-vCPU guest and -smp 2 with a 2-vCPU guest; each takes
 * about 25-35 s on an idle machine.
 */
const DIRECT = hostHasVirtualizationExtensions();
const SHELL = `${INIT_MARKER}-SHELL`;
// microvm with ACPI: this kernel lacks VIRTIO_MMIO_CMDLINE_DEVICES, so the
// virtio-mmio devices must come from the DSDT, not from virtio_mmio.device=.
const QEMU_EXTRA = ["-M", "acpi=on", "-no-reboot"];
const CMDLINE = "console=ttyS0 rdinit=/init panic=-1";
const L2_TIMEOUT_MS = 150_000;

function checkBoot(r: GuestRun, g: LinuxGuest, vcpus: number, token: string, poweredOff: boolean, context: string): void {
  const why = `${context}; last output:\n${r.serial.slice(-3000)}\n--- vmm:\n${r.vmmLog}`;
  expect(r.serial, why).toContain(SHELL);
  const line = r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.text ?? "";
  expect(line).toContain(`kernel=${g.version}`);
  expect(Number(/virtio=(\d+)/.exec(line)?.[1])).toBe(3);
  const cpu = r.lines.find((l) => l.text.startsWith(CPU_MARKER))?.text ?? "";
  expect(Number(/cpus=(\d+)/.exec(cpu)?.[1]), cpu).toBe(vcpus);
  const flags = cpu.split(/\s+/);
  expect(flags, cpu).toContain("hypervisor");
  expect(flags, cpu).toContain("x2apic");
  if (vcpus > 1) expect(r.serial).toMatch(new RegExp(`smp: Brought up 1 node, ${vcpus} CPUs`));
  // /init mounted the ext2 disk from virtio-blk and printed the file on it.
  expect(r.lines.map((l) => l.text)).toContain(`${DISK_MARKER} ${token}`);
  // /init ends with `poweroff -f`: through microvm's ACPI, QEMU exits with 0.
  expect(poweredOff, why).toBe(true);
  const t = r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.tMs ?? NaN;
  console.log(`[full-boot] ${context}: ${vcpus} vCPU(s), /init marker after ${(t / 1000).toFixed(1)} s, powered off after ${(r.wallMs / 1000).toFixed(1)} s`);
}

if (DIRECT) {
  describeWith(
    { kvm: true, tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "cpio", "gzip", "xz", "mke2fs"] },
    "full Linux boot to the busybox shell, QEMU on this host's KVM (vmx/svm present)",
    () => {
      for (const vcpus of [1, 2]) {
        it(`boots the Debian kernel with ${vcpus} vCPU(s), loads the virtio modules and reaches /init's shell`, async () => {
          const g = await linuxGuest();
          const token = randomBytes(8).toString("hex");
          const disk = await dataDisk(token);
          try {
            const r = await runGuest({
              vmm: "qemu",
              kernel: g.bzImage,
              initrd: g.initramfs,
              cmdline: CMDLINE,
              memMiB: 256,
              vcpus,
              devices: [{ kind: "blk", path: disk.path }, { kind: "rng" }, { kind: "net" }],
              timeoutMs: 120_000,
              extraArgs: QEMU_EXTRA,
            });
            checkBoot(r, g, vcpus, token, !r.timedOut && r.vmmExit?.code === 0, "direct");
          } finally {
            disk.remove();
          }
        }, 180_000);
      }
    },
  );
} else {
  describeWith(
    { tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "cpio", "zstd", "xz", "ldd", "busybox", "mke2fs"] },
    "full Linux boot to the busybox shell, QEMU+KVM inside a TCG L1 with emulated SVM (nested tier: no vmx/svm on this host)",
    () => {
      for (const [l1Vcpus, vcpus] of [[1, 1], [2, 2]] as const) {
        it(`L1 -smp ${l1Vcpus}: boots the Debian kernel with ${vcpus} vCPU(s) on KVM in L1, loads the virtio modules and reaches /init's shell`, async () => {
          const g = await linuxGuest();
          const token = randomBytes(8).toString("hex");
          const disk = await dataDisk(token);
          try {
            // QEMU is both the VMM under test and the reference here: a run where it did not
            // reach the shell or L1 failed is retried, up to three runs in all (runNestedUntilSound),
            // and reported. Two were not always enough: in one CI job L1 froze in the first run and QEMU's
            // 2-vCPU guest stopped after "ACPI: Interpreter enabled" in the second (as ours' tests, three).
            const { run, discarded } = await runNestedUntilSound({
              l1Vcpus,
              guests: [{
                name: `qemu-${vcpus}`,
                vmm: "qemu",
                kernel: g.bzImage,
                initrd: g.initramfs,
                cmdline: CMDLINE,
                memMiB: 256,
                vcpus,
                devices: [{ kind: "blk", path: disk.path }, { kind: "rng" }, { kind: "net" }],
                timeoutMs: L2_TIMEOUT_MS,
                extraArgs: QEMU_EXTRA,
              }],
            }, (x) => x.problem ?? (x.guests[0]?.serial.includes(SHELL) ? null : `qemu-${vcpus} did not reach the shell (${x.guests[0]?.end ?? "missing"})`), 3);
            if (discarded.length > 0) console.warn(`[nested] L1 -smp ${l1Vcpus}: discarded runs: ${discarded.join("; ")}`);
            expect(run.problem, `L1 problem; L1 console:\n${run.l1Serial.slice(-3000)}\n--- L1 qemu:\n${run.l1Log}`).toBeNull();
            const r = run.guests[0]!;
            checkBoot(r, g, vcpus, token, r.end === "exit" && r.status === 0, `nested, L1 -smp ${l1Vcpus}, /dev/kvm after ${((run.l1KvmMs ?? NaN) / 1000).toFixed(1)} s, L1 run ${(run.wallMs / 1000).toFixed(1)} s, image ${(run.image.bytes / 1e6).toFixed(1)} MB`);
          } finally {
            disk.remove();
          }
        }, 3 * (150_000 + L2_TIMEOUT_MS + 30_000)); // at most three L1 runs
      }
    },
  );
}
