import { describeWith } from "@ts-vmm/test-utils";
import { NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { buildMicroGuest, runGuest, selftestProblems, type GuestRun } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { runCli } from "../src/index.js";
import { inNamespace } from "./ns-launcher.js";
import { buildRxSender, runRxGuest } from "./net-rx.js";
import { oursLauncher } from "./ours-launcher.js";

vi.setConfig({ testTimeout: 90_000 });

function explain(r: GuestRun): string {
  return `exit=${String(r.exitCode)} vmm=${JSON.stringify(r.vmmExit)} timedOut=${r.timedOut}\n--- serial\n${r.serial}\n--- vmm log\n${r.vmmLog}`;
}

describeWith({ kvm: true, root: true, tools: ["gcc", "ld", "ip"] }, "virtio-net on the reference VMM (micro-guest, tap in a private network namespace)", () => {
  let elf = "";
  let ns: NetNamespace;
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    ns = NetNamespace.create("vmmnet");
  }, 120_000);
  afterAll(() => ns?.close());

  it("selftest: the guest's ARP who-has 10.0.2.2 is answered by the namespace's kernel through our virtio-net and tap", async () => {
    const tap = uniqueIfName("tsvr");
    // A persistent tap with the peer's address: the VMM attaches to it by name inside the namespace.
    ns.addTap(tap);
    const before = ns.linkStats(tap);
    const r = await runGuest({
      vmm: inNamespace(oursLauncher, ns), kernel: elf, cmdline: "mode=selftest", memMiB: 64, timeoutMs: 30_000,
      devices: [{ kind: "net", tap }],
    });
    expect(selftestProblems(r, ["net"]), explain(r)).toEqual([]);
    expect(r.results.passed).toEqual(expect.arrayContaining(["net.init", "net.tx", "net.arp-reply", "net.irq"]));
    // The MAC the guest read from config space is a locally administered unicast one,
    // and the peer's MAC it got back is the tap's.
    expect(r.results.values["net.mac"], explain(r)).toMatch(/^[0-9a-f]?[26ae]:/);
    const tapMac = (JSON.parse(ns.ip("-j", "link", "show", "dev", tap)) as { address: string }[])[0]!.address;
    const peer = (r.results.values["net.peer_mac"] ?? "").split(":").map((h) => parseInt(h, 16));
    expect(peer).toEqual(tapMac.split(":").map((h) => parseInt(h, 16)));
    // The kernel saw the request arrive (its rx) and sent the reply (its tx).
    const after = ns.linkStats(tap);
    expect(after.rxPackets).toBeGreaterThan(before.rxPackets);
    expect(after.txPackets).toBeGreaterThan(before.txPackets);
    ns.ip("link", "del", tap);
  });

  it("host to guest: 5000 frames sent into the tap arrive in the guest whole and in order", async () => {
    const tap = uniqueIfName("tsvr");
    ns.addTap(tap);
    try {
      const { run: r, senderOut } = await runRxGuest(ns, oursLauncher, elf, buildRxSender(), tap, 5000, 1514);
      expect(r.guestExit, `${senderOut}\n${explain(r)}`).toBe(0);
      expect(r.results.values["net_rx_frames"]).toBe("5000");
      expect(r.results.values["net_rx_seq_gaps"]).toBe("0");
      expect(r.results.values["net_rx_bad_len"]).toBe("0");
      expect(r.results.values["net_rx_num_buffers_bad"]).toBe("0");
      expect(senderOut).toMatch(/sent=5000 delivered=5000 dropped=0/);
    } finally {
      ns.ip("link", "del", tap);
    }
  });

  it("selftest with mac= and a rate limit on both directions: the guest reads that MAC and still gets its reply", async () => {
    const tap = uniqueIfName("tsvr");
    ns.addTap(tap);
    const r = await runGuest({
      vmm: inNamespace(oursLauncher, ns), kernel: elf, cmdline: "mode=selftest", memMiB: 64, timeoutMs: 30_000,
      // The device comes from our own flag (the harness's net kind has no MAC or rate options).
      extraArgs: ["--net", `tap=${tap},mac=02:11:22:33:44:55,bw=100000,ops=10,ops_burst=5`],
    });
    expect(selftestProblems(r, ["net"]), explain(r)).toEqual([]);
    expect(r.results.values["net.mac"]).toBe("2:11:22:33:44:55");
    ns.ip("link", "del", tap);
  });

  it("CLI: bad --net and rate-limit flags are refused with status 2 before anything runs", async () => {
    const cases: [string[], RegExp][] = [
      [["--net", "mac=52:54:00:12:34:56"], /--net takes tap=NAME/],
      [["--net", "tap=x,speed=1"], /--net takes tap=NAME/],
      [["--net", "tap=x,mac=01:02"], /mac= must look like/],
      [["--net", "tap=x,bw=0"], /--net bw= must be a whole number/],
      [["--net", "tap=x,ops=1,ops=2"], /ops given twice/],
      [["--disk", "d.img,bw_burst=5"], /bw_burst needs bw/],
      [["--disk", "d.img,ro=1"], /--disk takes PATH/],
      [["--disk", "d.img,poll_us=1001"], /--disk poll_us= must be a whole number/],
      [["--disk", "d.img,poll_us"], /--disk takes PATH/],
      [["--net", `tap=${"x".repeat(16)}`], /1 to 15 bytes/],
    ];
    for (const [flags, msg] of cases) {
      let err = "";
      const code = await runCli(["run", "--kernel", elf, "--mem", "16", ...flags], { write: () => true }, { write: (s: string) => ((err += s), true) });
      expect(code, `${flags.join(" ")}: ${err}`).toBe(2);
      expect(err).toMatch(msg);
    }
  });
});
