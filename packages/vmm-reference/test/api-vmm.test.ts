// The API end to end with the real VMM: `ts-vmm serve` configured over the
// socket boots the micro-guest on InstanceStart; `ts-vmm run --api-sock`
// serves runtime calls and SendCtrlAltDel ends the guest. Real KVM, real
// child processes, plain HTTP over the socket.
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it } from "vitest";
import { POST_BOOT_MESSAGE } from "../src/api/index.js";
import { faultOf, http, ready, start } from "./api-http.js";
import { contiguous, ticksOf } from "./ticker.js";
import { rawElf } from "./raw-elf.js";


describeWith({ kvm: true, tools: ["gcc", "ld"] }, "the API with the real VMM", () => {
  let elf = "";
  let dir = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-api-vmm-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("serve: configure through the API, InstanceStart, the guest's serial output, its exit ends the process and the socket is removed", async () => {
    const sock = join(dir, "serve.sock");
    const c = start(["serve", "--api-sock", sock]);
    await ready(sock, c);
    const put = (p: string, b: unknown) => http(sock, "PUT", p, b);
    expect((await put("/machine-config", { vcpu_count: 1, mem_size_mib: 64 })).status).toBe(204);
    expect((await put("/boot-source", { kernel_image_path: elf, boot_args: "mode=hello" })).status).toBe(204);
    expect((await put("/entropy", {})).status).toBe(204);
    expect(faultOf(await http(sock, "PATCH", "/vm", { state: "Paused" }))).toBe("The requested operation is not supported before starting the microVM.");
    expect(await put("/actions", { action_type: "InstanceStart" })).toMatchObject({ status: 204, text: "" });
    // mode=hello writes 0 to the debug-exit port: status (0 << 1) | 1.
    expect(await c.exit, c.err).toBe(1);
    expect(c.out).toContain("hello from the ts-vmm micro-guest");
    expect(c.out).toContain("RESULT exit=0");
    expect(existsSync(sock)).toBe(false);
  }, 60_000);

  it("serve: a VmConfig the VMM refuses is a 400 and the API keeps serving", async () => {
    const sock = join(dir, "refuse.sock");
    const c = start(["serve", "--api-sock", sock]);
    await ready(sock, c);
    const notElf = join(dir, "not-a-kernel");
    writeFileSync(notElf, "plain text, not a kernel");
    expect((await http(sock, "PUT", "/boot-source", { kernel_image_path: notElf })).status).toBe(204);
    const a = await http(sock, "PUT", "/actions", { action_type: "InstanceStart" });
    expect(a.status).toBe(400);
    expect(faultOf(a).length).toBeGreaterThan(10);
    expect((await http(sock, "GET", "/")).json).toMatchObject({ state: "Not started" });
    c.proc.kill("SIGTERM");
    expect(await c.exit).toBe(130);
    expect(c.err).toContain("stopped by SIGTERM before the VM was started");
    expect(existsSync(sock)).toBe(false);
  }, 60_000);

  it("run --api-sock: runtime calls on the running VM, pre-boot calls refused, SendCtrlAltDel reaches the guest's i8042 and ends it", async () => {
    // Polls the i8042 until Del's make code (0x53), then writes it to the debug-exit port.
    const code = [0xe4, 0x64, 0xa8, 0x01, 0x74, 0xfa, 0xe4, 0x60, 0x3c, 0x53, 0x75, 0xf4, 0xe6, 0xf4, 0xeb, 0xfe];
    const kernel = join(dir, "kbd.elf");
    writeFileSync(kernel, rawElf(code));
    const sock = join(dir, "run.sock");
    const c = start(["run", "--kernel", kernel, "--mem", "16", "--api-sock", sock, "--timeout", "30"]);
    await ready(sock, c);
    expect((await http(sock, "GET", "/")).json).toMatchObject({ state: "Running", app_name: "ts-vmm" });
    expect((await http(sock, "GET", "/machine-config")).json).toMatchObject({ vcpu_count: 1, mem_size_mib: 16 });
    expect(await http(sock, "PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 32 })).toMatchObject({ status: 400, json: { fault_message: POST_BOOT_MESSAGE } });
    expect(await http(sock, "PUT", "/boot-source", { kernel_image_path: kernel })).toMatchObject({ status: 400, json: { fault_message: POST_BOOT_MESSAGE } });
    expect(faultOf(await http(sock, "GET", "/balloon"))).toBe("No balloon device found.");
    const pause = await http(sock, "PATCH", "/vm", { state: "Paused" });
    expect(pause.status).toBe(204);
    expect((await http(sock, "GET", "/")).json).toMatchObject({ state: "Paused" });
    expect((await http(sock, "PATCH", "/vm", { state: "Resumed" })).status).toBe(204);
    expect((await http(sock, "GET", "/")).json).toMatchObject({ state: "Running" });
    expect(await http(sock, "PUT", "/actions", { action_type: "SendCtrlAltDel" })).toMatchObject({ status: 204 });
    expect(await c.exit, c.err).toBe(((0x53 << 1) | 1) & 0xff);
    expect(existsSync(sock)).toBe(false);
  }, 60_000);

  it("over the API: pause, snapshot/create, metrics; the process killed; a new serve loads the snapshot (resume_vm) and the guest goes on", async () => {
    const img = join(dir, "api-snap.img");
    const fd = openSync(img, "w");
    ftruncateSync(fd, 8 << 20);
    closeSync(fd);
    const sock = join(dir, "snap-a.sock");
    const a = start(["run", "--kernel", elf, "--mem", "64", "--disk", img, "--cmdline", "mode=ticker ticks=300 spin=20000000", "--api-sock", sock, "--timeout", "60"]);
    await ready(sock, a);
    for (let i = 0; i < 400 && ticksOf(a.out).length < 10; i++) await new Promise((r) => setTimeout(r, 25));
    expect(ticksOf(a.out).length, a.err).toBeGreaterThanOrEqual(10);
    const snap = { snapshot_path: join(dir, "api.snap"), mem_file_path: join(dir, "api.mem") };
    // Firecracker's rule: a snapshot only of a paused VM.
    expect((await http(sock, "PUT", "/snapshot/create", snap)).status).toBe(400);
    expect((await http(sock, "PATCH", "/vm", { state: "Paused" })).status).toBe(204);
    const m = await http(sock, "GET", "/metrics");
    expect(m.status).toBe(200);
    const metrics = m.json as { exits: { byDevice: Record<string, number> } };
    expect(JSON.stringify(metrics)).toContain("blk0");
    expect((await http(sock, "PUT", "/snapshot/create", { ...snap, snapshot_type: "Full" })).status).toBe(204);
    const head = readFileSync(snap.snapshot_path).subarray(0, 8).toString("latin1");
    expect(head).toBe("TSVMMSNP");
    a.proc.kill("SIGKILL");
    await a.exit;
    const sockB = join(dir, "snap-b.sock");
    const b = start(["serve", "--api-sock", sockB, "--timeout", "60"]);
    await ready(sockB, b);
    // Loading takes no configuration before it.
    expect((await http(sockB, "PUT", "/snapshot/load", { snapshot_path: snap.snapshot_path, mem_backend: { backend_path: snap.mem_file_path, backend_type: "File" }, resume_vm: true })).status).toBe(204);
    expect(await b.exit, b.err).toBe(1); // the ticker's debug-exit value 0
    const after = ticksOf(b.out);
    // It goes on from where it was paused (at least ten ticks in), not from the start, with no tick lost.
    expect(after[0]).toBeGreaterThanOrEqual(10);
    expect(contiguous(after)).toBe(true);
    expect(after.at(-1)).toBe(299);
    expect(b.out).toContain("PASS ticker");
  }, 120_000);

  it("run --api-sock refuses a socket path another process listens on, before the guest runs", async () => {
    const sock = join(dir, "busy.sock");
    const first = start(["serve", "--api-sock", sock]);
    await ready(sock, first);
    const second = start(["run", "--kernel", elf, "--mem", "64", "--cmdline", "mode=hello", "--api-sock", sock]);
    expect(await second.exit).toBe(2);
    expect(second.err).toBe(`ts-vmm: --api-sock ${sock}: another process is listening on it\n`);
    expect(second.out).toBe("");
    first.proc.kill("SIGINT");
    expect(await first.exit).toBe(130);
  }, 60_000);
});
