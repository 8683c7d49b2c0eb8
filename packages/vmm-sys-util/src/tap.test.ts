import { spawnSync } from "node:child_process";
import { constants } from "node:os";
import { describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { EventFd, TUN_F, VmmSysError, openTap, tapSetOffload, tapSetVnetHdrSize } from "./index.js";
import { codeOf } from "../test/code-of.js";

describe("tap arguments", () => {
  it("rejects bad names and options before any syscall", () => {
    for (const name of ["", "a".repeat(16), "a/b", "a:b", "a b", ".", "..", 5]) {
      expect(codeOf(() => openTap({ name: name as string }))).toBe("InvalidArgument");
    }
    expect(codeOf(() => openTap({ vnetHdr: "yes" as unknown as boolean }))).toBe("InvalidArgument");
    expect(codeOf(() => openTap(7 as unknown as object))).toBe("InvalidArgument");
    expect(codeOf(() => tapSetOffload(-1, 0))).toBe("InvalidArgument");
    expect(codeOf(() => tapSetOffload(3, -1))).toBe("InvalidArgument");
    expect(codeOf(() => tapSetVnetHdrSize(3, 1.5))).toBe("InvalidArgument");
  });

  it("reports ENOTTY for tap ioctls on an fd that is not a tap", () => {
    const e = new EventFd();
    const err = (() => {
      try {
        tapSetOffload(e.fd, TUN_F.CSUM);
      } catch (x) {
        return x as VmmSysError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(VmmSysError);
    expect(err?.code).toBe("ENOTTY");
    expect(err?.syscall).toBe("TUNSETOFFLOAD");
    expect(codeOf(() => tapSetVnetHdrSize(e.fd, 12))).toBe("ENOTTY");
    e.close();
  });

  it("TUN_F matches linux/if_tun.h as compiled into the addon", async () => {
    const { native } = await import("./native.js");
    const c = native().tapConstants;
    expect(TUN_F).toEqual({ CSUM: c.TUN_F_CSUM, TSO4: c.TUN_F_TSO4, TSO6: c.TUN_F_TSO6, TSO_ECN: c.TUN_F_TSO_ECN, UFO: c.TUN_F_UFO });
    expect(() => native().tunSetIff(0, "x".repeat(16), 2)).toThrow(RangeError);
  });

  it("without CAP_NET_ADMIN, creating a tap fails with a typed error", () => {
    const script = new URL("../test/fixtures/tap-noperm.ts", import.meta.url).pathname;
    const node = [process.execPath, "--import", "tsx", script];
    // As root, drop CAP_NET_ADMIN from the child's bounding set (setpriv, util-linux), so the
    // attempt cannot leak an interface into the host namespace.
    const cmd = process.getuid?.() === 0 ? ["setpriv", "--bounding-set=-net_admin", ...node] : node;
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^(EPERM:TUNSETIFF|EACCES:TUNSETIFF|ENOENT:open|EACCES:open)$/);
  });
});

describeWith({ root: true, tools: ["ip", "unshare"] }, "tap in a private network namespace", () => {
  it("creates taps, sets offloads and vnet header size, exchanges frames with the kernel", () => {
    const script = new URL("../test/fixtures/tap-child.ts", import.meta.url).pathname;
    // unshare -n: a new network namespace that disappears with the child, taps included.
    const r = spawnSync("unshare", ["-n", process.execPath, "--import", "tsx", script], { encoding: "utf8", timeout: 60_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out["name"]).toBe("vsutap0");
    expect(out["linkType"]).toBe("ether");
    expect(out["badHdrSize"]).toBe("EINVAL:TUNSETVNETHDRSZ");
    expect(out["multiQueue"]).toEqual(["vsumq", "vsumq", true]);
    expect(out["mqMismatch"]).toBe("EINVAL:TUNSETIFF");
    const arp = out["arp"] as number[];
    expect(arp).not.toBeNull();
    // 12-byte vnet header + 42-byte ARP frame; broadcast destination; ARP request (opcode 1).
    expect(arp[0]).toBe(12 + 42);
    expect(arp.slice(1, 7)).toEqual([255, 255, 255, 255, 255, 255]);
    expect(arp[7]).toBe(0x0806);
    expect(arp[8]).toBe(1);
    expect(out["written"]).toBe(72);
    expect(out["rxDelta"]).toBe(1);
    expect(out["again"]).toEqual(["again", -constants.errno.EAGAIN]);
  });
});
