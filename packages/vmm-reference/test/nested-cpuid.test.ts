// The nested tier, live: boots the L1 (QEMU TCG, -cpu EPYC,+svm,+npt, kvm-amd)
// with node and the built packages, reads back every template and switch
// there (scripts/cpuid-recorder/run-in-tcg-l1.sh, about 45 s here), and
// checks the run as the recorded one is checked. The only test where the
// read-back meets a hardware-style KVM on this machine.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { debianKernel } from "@ts-vmm/test-utils/node";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { checkKeptExactly, checkL1Report, checkSamePolicy, type Recording } from "./nested-checks.js";

const SCRIPT = fileURLToPath(new URL("../scripts/cpuid-recorder/run-in-tcg-l1.sh", import.meta.url));

describeWith({ tools: ["qemu-system-x86_64", "busybox", "cpio", "xz", "apt-get", "dpkg-deb", "zstd"] }, "CPUID read-back in the nested tier (live)", () => {
  it("every template and switch reads back exactly from kvm-amd in L1; +shstk is refused there", async () => {
    const k = await debianKernel();
    const out = join(mkdtempSync(join(tmpdir(), "ts-vmm-nested-")), "readback.json");
    const r = spawnSync("sh", [SCRIPT, out], { encoding: "utf8", timeout: 600_000, env: { ...process.env, TS_VMM_KERNEL_VERSION: k.version } });
    expect(r.status, r.stderr).toBe(0);
    const rec = JSON.parse(readFileSync(out, "utf8")) as Recording;
    expect(rec.kernel).toBe(k.version);
    checkSamePolicy(rec);
    checkKeptExactly(rec);
    checkL1Report(rec);
  }, 660_000);
});
