import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  buildLayer,
  concatLayers,
  layerHash,
  runNested,
  sharedLibraries,
  shq,
  TestGuestsError,
  workspacePackageEntries,
  type Layer,
} from "../src/index.js";

const work = mkdtempSync(join(tmpdir(), "ts-vmm-nested-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("layerHash", () => {
  const a: Layer = { name: "t", entries: [{ path: "/a", content: "x", mode: 0o644 }, { path: "/b", symlink: "a" }] };
  it("does not depend on entry order", () => {
    expect(layerHash({ name: "t", entries: [...a.entries].reverse() })).toBe(layerHash(a));
  });
  it("changes with content, mode and symlink target", () => {
    const h = layerHash(a);
    expect(layerHash({ name: "t", entries: [{ path: "/a", content: "y", mode: 0o644 }, a.entries[1]!] })).not.toBe(h);
    expect(layerHash({ name: "t", entries: [{ path: "/a", content: "x", mode: 0o755 }, a.entries[1]!] })).not.toBe(h);
    expect(layerHash({ name: "t", entries: [a.entries[0]!, { path: "/b", symlink: "c" }] })).not.toBe(h);
  });
});

describe("shq", () => {
  it.each(["plain", "with space", "it's", "$HOME `x` \"q\" \\ *", "", "a\nb"])("quotes %j so sh sees it unchanged", (s) => {
    expect(execFileSync("sh", ["-c", `printf %s ${shq(s)}`], { encoding: "utf8" })).toBe(s);
  });
});

describe("buildLayer / concatLayers", () => {
  it("writes a zstd newc archive with the entries at their paths, reuses it by hash, and concatenates with 4-byte padding", async () => {
    const layer: Layer = {
      name: "unit",
      entries: [
        { path: "/etc/x.txt", content: "hello\n", mode: 0o600 },
        { path: "/etc/link", symlink: "x.txt" },
        { path: "/empty", dir: true },
      ],
    };
    const f = await buildLayer(layer, work);
    expect(await buildLayer(layer, work)).toBe(f);
    const list = execFileSync("sh", ["-c", `zstd -dc "$1" | cpio -t --quiet`, "sh", f], { encoding: "utf8" }).split("\n");
    expect(list).toEqual(expect.arrayContaining(["etc/x.txt", "etc/link", "empty"]));
    const out = join(work, "cat");
    concatLayers([f, f], out);
    const n = readFileSync(f).byteLength;
    const pad = (4 - (n % 4)) % 4;
    expect(readFileSync(out).byteLength).toBe(2 * (n + pad));
  });
});

describe("workspacePackageEntries", () => {
  it("takes a package's dist, addons and run-time workspace dependencies with their links, and nothing else", async () => {
    const ref = resolve(import.meta.dirname, "..", "..", "vmm-reference");
    const entries = await workspacePackageEntries([ref]);
    const paths = entries.map((e) => e.path);
    const pkgs = resolve(ref, "..");
    expect(paths).toContain(join(ref, "package.json"));
    expect(paths).toContain(join(ref, "dist", "cli.js"));
    expect(paths).toContain(join(pkgs, "kvm-ioctls", "build", "Release", "kvm_ioctls.node"));
    const link = entries.find((e) => e.path === join(ref, "node_modules", "@ts-vmm", "kvm-ioctls"));
    expect(link && "symlink" in link ? link.symlink : null).toBe("../../../kvm-ioctls");
    // devDependencies (test-guests, test-utils) and source maps stay out.
    expect(paths.some((p) => p.includes(join(pkgs, "test-guests")))).toBe(false);
    expect(paths.some((p) => p.endsWith(".map"))).toBe(false);
  });
  it("refuses a directory without package.json", async () => {
    await expect(workspacePackageEntries([work])).rejects.toMatchObject({ code: "InvalidArgument" });
  });
});

describe("sharedLibraries", () => {
  it("lists the C library and the ELF interpreter of node", async () => {
    const libs = await sharedLibraries(process.execPath);
    expect(libs.some((l) => /\/libc\.so\.6$/.test(l))).toBe(true);
    expect(libs.some((l) => /ld-linux-x86-64\.so\.2$/.test(l))).toBe(true);
  });
});

describe("runNested option checks (before anything starts)", () => {
  const guest = { name: "g", vmm: "qemu" as const, kernel: "/nonexistent" };
  it("rejects an empty guest list, bad L1 sizes and duplicate names", async () => {
    await expect(runNested({ guests: [] })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest], l1Vcpus: 0 })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest], l1MemMiB: 100 })).rejects.toMatchObject({ code: "InvalidArgument" });
    await expect(runNested({ guests: [guest, guest] })).rejects.toBeInstanceOf(TestGuestsError);
  });
});
