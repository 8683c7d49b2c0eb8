// virtio-balloon on the reference VMM: `--balloon` parsing, the micro-guest's
// balloon selftest with the VMM's RSS sampled from outside (it must really
// drop), a target change while the guest runs (the in-process equivalent of
// QEMU's QMP `balloon`), and the discard primitive on a real guest_memfd and on
// hugetlb memory (refused at device creation).
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { describeWith } from "@ts-vmm/test-utils";
import { MAPPABLE_GUEST_MEMFD } from "./host-features.js";
import { buildMicroGuest, runGuest, selftestProblems, watchBalloon, type GuestRun, type VmmLauncher } from "@ts-vmm/test-guests";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { UsageError, parseBalloon, runArgs } from "../src/cli-args.js";
import { Vmm, VirtioManager, runCli, type VirtioDeviceConfig } from "../src/index.js";
import { oursLauncher } from "./ours-launcher.js";

vi.setConfig({ testTimeout: 90_000 });

function explain(r: GuestRun): string {
  return `exit=${String(r.exitCode)} vmm=${JSON.stringify(r.vmmExit)} timedOut=${r.timedOut}\n--- serial\n${r.serial}\n--- vmm log\n${r.vmmLog}`;
}

describe("--balloon (no KVM needed)", () => {
  it("bare, and with each option", () => {
    expect(parseBalloon("")).toEqual({ kind: "balloon" });
    expect(parseBalloon("amount_mib=16,deflate_on_oom=on,stats_s=5,free_page_reporting=on")).toEqual({
      kind: "balloon", amountMib: 16, deflateOnOom: true, statsIntervalS: 5, freePageReporting: true,
    });
    expect(parseBalloon("deflate_on_oom=off")).toEqual({ kind: "balloon", deflateOnOom: false });
    // A bare --balloon before another flag or at the end.
    expect(runArgs({ kernel: "k", balloon: "" }).virtio).toEqual([{ kind: "balloon" }]);
  });

  it.each([
    ["amount_mib=lots", '--balloon amount_mib must be a whole number of MiB from 0 to 1048576, got "lots"'],
    ["amount_mib=-1", '--balloon amount_mib must be a whole number of MiB from 0 to 1048576, got "-1"'],
    ["stats_s=1.5", '--balloon stats_s must be a whole number of seconds from 0 to 2147483, got "1.5"'],
    ["deflate_on_oom=yes", '--balloon deflate_on_oom must be on or off, got "yes"'],
    ["size=4", '--balloon has no option "size" (amount_mib, deflate_on_oom, stats_s, free_page_reporting)'],
    ["amount_mib=1,amount_mib=2", "--balloon amount_mib given twice"],
    ["on", '--balloon takes key=value options (amount_mib, deflate_on_oom, stats_s, free_page_reporting), got "on"'],
  ])("--balloon %s → a usage error naming the key", (v, msg) => {
    expect(() => parseBalloon(v)).toThrow(UsageError);
    expect(() => parseBalloon(v)).toThrow(msg);
  });

  it("--help documents it", async () => {
    let out = "";
    await runCli(["--help"], { write: (b) => void (out += String(b)) }, { write: () => true });
    expect(out).toContain("[--balloon [amount_mib=N][,deflate_on_oom=on][,stats_s=N][,free_page_reporting=on]]");
    expect(out).toContain("free_page_reporting=on returns the pages");
  });
});

/** The reference VMM in this process, handing the Vmm to the test once created. */
function inProcessOurs(onCreate: (vmm: Vmm) => void): VmmLauncher {
  return {
    name: "ours-in-process",
    provides: oursLauncher.provides,
    plan(spec) {
      const virtio: VirtioDeviceConfig[] = spec.devices.map((d): VirtioDeviceConfig => {
        if (d.kind === "balloon") return { kind: "balloon" };
        if (d.kind === "blk") return { kind: "blk", path: d.path, readOnly: d.readOnly ?? false };
        if (d.kind === "rng") return { kind: "rng" };
        throw new Error(`no ${d.kind} in this launcher`);
      });
      return {
        kind: "in-process",
        start(io) {
          const vmm = Vmm.create({ kernel: spec.kernel, cmdline: spec.cmdline, memMiB: spec.memMiB, vcpus: spec.vcpus, virtio });
          onCreate(vmm);
          const exited = vmm.run({ serial: (b) => io.serial(b) }).then((r) => {
            vmm.close();
            return { guestExitValue: r.guestExitValue, detail: r.reason };
          });
          return { exited, stop: async () => vmm.stop() };
        },
      };
    },
  };
}

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "virtio-balloon on the reference VMM (micro-guest)", () => {
  let elf = "";
  let dir = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-balloon-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("--balloon: the selftest inflates 16 MiB of touched RAM and the VMM process's RSS really drops (sampled by the host)", async () => {
    // The VMM process is found by an argument only it has: the kernel, under a unique name.
    const kernel = join(dir, `tsvmm-balloon-${process.pid}-${Date.now()}.elf`);
    symlinkSync(elf, kernel);
    const w = watchBalloon(kernel);
    const r = await runGuest({
      vmm: oursLauncher, kernel, cmdline: "mode=selftest", memMiB: 64, timeoutMs: 30_000,
      devices: [{ kind: "balloon" }], onSerial: w.onSerial,
    });
    expect(selftestProblems(r, ["balloon"]), explain(r)).toEqual([]);
    expect(w.problems(r), JSON.stringify(w.samples)).toEqual([]);
    console.log(`[ours] balloon: RSS ${w.samples.touched} -> ${w.samples.inflated} bytes (RssShmem ${w.samples.touchedShmem} -> ${w.samples.inflatedShmem}) around a 16 MiB inflate`);
  });

  it("a target change while the guest runs (Vmm.setBalloonTarget, what the API calls) arrives as a config-change interrupt and num_pages follows", async () => {
    let vmm: Vmm | undefined;
    let pending = "";
    let changed = false;
    const r = await runGuest({
      vmm: inProcessOurs((v) => (vmm = v)), kernel: elf, cmdline: "mode=selftest balloon_config_wait=1", memMiB: 64, timeoutMs: 30_000,
      devices: [{ kind: "balloon" }],
      onSerial: (t) => {
        pending += t;
        if (!changed && pending.includes("RESULT balloon.config-wait=1")) {
          changed = true;
          // QEMU's `balloon value=48M` on a 64 MiB guest: 16 MiB in the balloon, 4096 pages.
          vmm!.setBalloonTarget(16);
        }
      },
    });
    expect(changed).toBe(true);
    expect(selftestProblems(r, ["balloon"]), explain(r)).toEqual([]);
    expect(r.results.passed).toContain("balloon.config-change");
    expect(r.results.values["balloon.num_pages_after"], explain(r)).toMatch(/^4096 config_irqs=[1-9]\d* /);
    expect(r.results.values["irq.balloon"]).toMatch(/config:[1-9]/);
  });

  it("the Vmm's balloon methods: status, a target above the guest's memory refused in one sentence, no balloon refused", () => {
    const vmm = Vmm.create({ kernel: elf, memMiB: 64, virtio: [{ kind: "balloon", amountMib: 8, deflateOnOom: true, statsIntervalS: 2 }] });
    try {
      expect(vmm.balloonStatus()).toMatchObject({ targetMib: 8, actualMib: 0, stats: undefined });
      vmm.setBalloonTarget(32);
      expect(vmm.balloonStatus()?.targetMib).toBe(32);
      expect(() => vmm.setBalloonTarget(65)).toThrow("the balloon amount must be a whole number of MiB from 0 to the guest's 64 MiB, got 65");
      expect(() => vmm.setBalloonTarget(1.5)).toThrow(/whole number of MiB/);
    } finally {
      vmm.close();
    }
    const plain = Vmm.create({ kernel: elf, memMiB: 16 });
    try {
      expect(plain.balloonStatus()).toBeUndefined();
      expect(() => plain.setBalloonTarget(1)).toThrow("this VM has no balloon device (ts-vmm run --balloon)");
    } finally {
      plain.close();
    }
  });

  it("ts-vmm run --balloon amount_mib above --memory: exit 2 and one line", async () => {
    let err = "";
    const code = await runCli(["run", "--kernel", elf, "--mem", "32", "--balloon", "amount_mib=64"], { write: () => true }, { write: (s) => void (err += s) });
    expect(code).toBe(2);
    expect(err.trimEnd().split("\n")).toHaveLength(1);
    expect(err).toContain("the balloon amount must be a whole number of MiB from 0 to the guest's 32 MiB, got 64");
  });
});

describeWith({ kvm: true, hostFeatures: [MAPPABLE_GUEST_MEMFD] }, "discard on a real guest_memfd (KVM_CREATE_GUEST_MEMFD with MMAP | INIT_SHARED)", () => {
  it("punches the range out of the guest_memfd: its pages leave the process's RSS and read back as zeros", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    const fd = vm.createGuestMemfd(32 << 20, 3n); // GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    try {
      const mem = GuestMemoryMmap.fromGuestMemfd(fd, [{ start: 0, size: 32 << 20 }]);
      expect(mem.regions[0]!.backing).toEqual({ kind: "guest_memfd", shared: true, pageSize: 4096 });
      const chunk = new Uint8Array(1 << 20).fill(5);
      for (let a = 0; a < 32 << 20; a += 1 << 20) mem.write(a, chunk);
      // guest_memfd pages are file pages of the mapping (RssFile); st_blocks stays 0 for it.
      const rssFile = (): number => Number(/^RssFile:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "latin1"))![1]) * 1024;
      const before = rssFile();
      mem.discardRange(4 << 20, 24 << 20);
      expect(before - rssFile()).toBeGreaterThan(23 << 20);
      expect(mem.readU8(4 << 20)).toBe(0);
      expect(mem.readU8((28 << 20) - 1)).toBe(0);
      expect(mem.readU8(28 << 20)).toBe(5);
      expect(fstatSync(fd).size).toBe(32 << 20);
      mem.close();
    } finally {
      closeSync(fd);
      vm.close();
      kvm.close();
    }
  });
});

describeWith({ kvm: true, root: true }, "virtio-balloon on hugetlb guest memory (reserves 2 huge pages)", () => {
  it("is refused at device creation with one sentence", () => {
    const nr = "/proc/sys/vm/nr_hugepages";
    const before = Number(readFileSync(nr, "latin1"));
    const write = (n: number): void => {
      const fd = openSync(nr, "w");
      try {
        writeSync(fd, String(n));
      } finally {
        closeSync(fd);
      }
    };
    write(before + 2);
    const kvm = new Kvm();
    const vm = kvm.createVm();
    try {
      const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 << 20 }], { hugetlb: true });
      expect(() => VirtioManager.create(vm, mem, [{ kind: "balloon" }])).toThrow(
        "virtio device setup failed: virtio-balloon gives memory back in 4 KiB pages, but this guest memory can only be discarded in 2048 KiB huge pages: back guest memory with 4 KiB pages to use a balloon",
      );
      mem.close();
    } finally {
      vm.close();
      kvm.close();
      write(before);
    }
  });
});
