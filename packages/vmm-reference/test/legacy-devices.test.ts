// The legacy devices on real KVM, with hand-assembled guests (CPL0, so every
// instruction goes through KVM's emulator on this host: they are short).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { runCli } from "../src/cli.js";
import { Vmm } from "../src/index.js";
import { exitByte, rawElf } from "./raw-elf.js";

/**
 * Echo: poll LSR.DR, read RBR, write it to THR; a 'q' ends the VM through
 * debug-exit with the value 'q'.
 */
const ECHO = [
  0x66, 0xba, 0xfd, 0x03, // 0: mov dx, 0x3fd
  0xec, //                   4: in al, dx
  0xa8, 0x01, //             5: test al, 1
  0x74, 0xf7, //             7: jz 0
  0x66, 0xba, 0xf8, 0x03, // 9: mov dx, 0x3f8
  0xec, //                  13: in al, dx
  0x3c, 0x71, //            14: cmp al, 'q'
  0x74, 0x03, //            16: je 21
  0xee, //                  18: out dx, al
  0xeb, 0xeb, //            19: jmp 0
  0xe6, 0xf4, //            21: out 0xf4, al
  0xeb, 0xfe,
];
/** mov dx, port; mov al, v; out dx, al; then spin. */
const outDx = (port: number, v: number): number[] => [0x66, 0xba, port & 0xff, port >> 8, 0xb0, v, 0xee, 0xeb, 0xfe];

const sink = (): Writable & { text: string } => {
  const w = new Writable({ write(c: Buffer, _e, cb) { w.text += c.toString("latin1"); cb(); } }) as Writable & { text: string };
  w.text = "";
  return w;
};

describeWith({ kvm: true }, "legacy devices on KVM", () => {
  it("COM1 input reaches the guest through the bounded receive FIFO, in order, more than 16 bytes at a time", async () => {
    const vmm = Vmm.create({ kernel: rawElf(ECHO), memMiB: 16 });
    let out = "";
    const p = vmm.run({ serial: (b) => { out += Buffer.from(b).toString("latin1"); } });
    const text = "the brown fox jumps over the lazy dog, 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"; // no lower-case q
    vmm.sendSerialInput(Buffer.from(text.slice(0, 40)));
    vmm.sendSerialInput(Buffer.from(text.slice(40)));
    vmm.sendSerialInput(Buffer.from("q"));
    const r = await p;
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x71 });
    expect(out).toBe(text);
  }, 30_000);

  it("keeps every input byte while the guest is slow to read (no 'q' until the end)", async () => {
    const vmm = Vmm.create({ kernel: rawElf(ECHO), memMiB: 16 });
    let out = "";
    const p = vmm.run({ serial: (b) => { out += Buffer.from(b).toString("latin1"); } });
    const text = Array.from({ length: 200 }, (_, i) => String.fromCharCode(0x41 + (i % 16))).join("");
    vmm.sendSerialInput(Buffer.from(text + "q"));
    const r = await p;
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x71 });
    expect(out).toBe(text);
  }, 60_000);

  it("the CLI feeds stdin to COM1", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-echo-"));
    const kernel = join(dir, "echo.elf");
    writeFileSync(kernel, rawElf(ECHO));
    const stdin = new PassThrough();
    const out = sink();
    const err = sink();
    const code = runCli(["run", "--kernel", kernel, "--mem", "16"], out, err, { stdin });
    stdin.write("hi there\n");
    setTimeout(() => stdin.write("q"), 200);
    expect(await code).toBe((0x71 << 1 | 1) & 0xff);
    expect(out.text).toBe("hi there\n");
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it("Ctrl-Alt-Del injected on the main thread reaches the guest's i8042 polling loop (set 1 codes)", async () => {
    // Poll the status port for OBF, read the data port until Del's make code (0x53), exit with it.
    const code = [
      0xe4, 0x64, //  0: in al, 0x64
      0xa8, 0x01, //  2: test al, 1
      0x74, 0xfa, //  4: jz 0
      0xe4, 0x60, //  6: in al, 0x60
      0x3c, 0x53, //  8: cmp al, 0x53
      0x75, 0xf4, // 10: jne 0
      0xe6, 0xf4, // 12: out 0xf4, al
      0xeb, 0xfe,
    ];
    const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16 });
    const p = vmm.run({ serial: () => {} });
    expect(vmm.sendCtrlAltDel()).toBe(true);
    const r = await p;
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x53 });
    expect(vmm.sendCtrlAltDel()).toBe(false); // closed
  }, 30_000);

  it("the boot-timer port records the guest's 8-, 16- and 32-bit milestones with host times", async () => {
    const code = [
      0x66, 0xba, 0x40, 0x04, //       mov dx, 0x440
      0xb0, 0x01, //                   mov al, 1
      0xee, //                         out dx, al
      0x66, 0xb8, 0x34, 0x12, //       mov ax, 0x1234
      0x66, 0xef, //                   out dx, ax
      0xb8, 0xef, 0xbe, 0xad, 0xde, // mov eax, 0xdeadbeef
      0xef, //                         out dx, eax
      ...exitByte(0),
    ];
    const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16 });
    expect(vmm.bootMilestones().milestones).toEqual([]);
    const started = process.hrtime.bigint();
    const r = await vmm.run({ serial: () => {} });
    const elapsedUs = Number((process.hrtime.bigint() - started) / 1000n);
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0 });
    const { milestones, dropped, ignored } = vmm.bootMilestones();
    expect(milestones.map((m) => [m.value, m.width])).toEqual([[1, 1], [0x1234, 2], [0xdeadbeef, 4]]);
    expect({ dropped, ignored }).toEqual({ dropped: 0, ignored: 0 });
    const times = milestones.map((m) => m.micros);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(times[0]!).toBeGreaterThan(0);
    expect(times[2]!).toBeLessThanOrEqual(elapsedUs);
  }, 30_000);

  it("ACPI S5 powers off (CLI status 0), the ACPI reset register and the i8042 reset", async () => {
    const run = async (code: number[]): Promise<{ reason: string; detail: string | undefined }> => {
      const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16 });
      try {
        const r = await vmm.run({ serial: () => {} });
        return { reason: r.reason, detail: r.detail };
      } finally {
        vmm.close();
      }
    };
    expect(await run(outDx(0x3c0, 0x20 | (5 << 2)))).toEqual({ reason: "PowerOff", detail: "vCPU 0: the guest powered off through ACPI S5 (SLP_EN, SLP_TYP 5)" });
    expect(await run(outDx(0x3c2, 1))).toMatchObject({ reason: "Reset", detail: expect.stringContaining("ACPI reset register") as string });
    expect(await run([0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe])).toMatchObject({ reason: "Reset", detail: expect.stringContaining("i8042") as string });
    // S3 is not a power-off: the guest goes on to the debug exit.
    expect(await run([0x66, 0xba, 0xc0, 0x03, 0xb0, 0x20 | (3 << 2), 0xee, ...exitByte(9)])).toMatchObject({ reason: "DebugExit" });
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-s5-"));
    writeFileSync(join(dir, "s5.elf"), rawElf(outDx(0x3c0, 0x34)));
    const err = sink();
    expect(await runCli(["run", "--kernel", join(dir, "s5.elf"), "--mem", "16"], sink(), err)).toBe(0);
    expect(err.text).toContain("powered off");
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});

/**
 * Interrupts from the 16550A through the in-kernel IOAPIC: the guest routes pin
 * 4 to vector 0x30, enables IER.THRI and halts; its ISR sees IIR = THRE, switches
 * IER to received data, and on the next interrupt (IIR = RDI) reads the byte the
 * host sent and ends the VM with it through debug-exit. Assembled at test time.
 */
const IRQ_GUEST = `.code64
.globl _start
_start:
	mov $0x180000, %rsp
	# IDT at 0x160000: vector 0x30 -> isr (64-bit interrupt gate, selector 0x10)
	lea isr(%rip), %rax
	mov $0x160300, %rdi
	mov %ax, (%rdi)
	movw $0x10, 2(%rdi)
	movw $0x8e00, 4(%rdi)
	shr $16, %rax
	mov %ax, 6(%rdi)
	shr $16, %rax
	mov %eax, 8(%rdi)
	movl $0, 12(%rdi)
	movw $0xfff, 0x15fff0
	movq $0x160000, 0x15fff2
	lidt 0x15fff0
	# mask the legacy PIC: only the IOAPIC delivers
	mov $0xff, %al
	out %al, $0x21
	out %al, $0xa1
	# IOAPIC pin 4: vector 0x30, fixed, physical, edge, active high, unmasked, to APIC 0
	mov $0xfec00000, %rbx
	movl $0x19, (%rbx)
	movl $0, 0x10(%rbx)
	movl $0x18, (%rbx)
	movl $0x30, 0x10(%rbx)
	# local APIC software-enabled, spurious vector 0xff
	mov $0xfee00000, %rbx
	movl $0x1ff, 0xf0(%rbx)
	# UART: THR-empty interrupt on
	mov $0x3f9, %dx
	mov $0x02, %al
	out %al, %dx
	sti
1:	hlt
	cmpb $0, 0x170000
	je 1b
	# THRE arrived (the ISR switched IER to received-data); wait for a received byte
2:	hlt
	cmpb $0, 0x170001
	je 2b
	mov 0x170002, %al
	out %al, $0xf4
3:	hlt
	jmp 3b

isr:
	push %rax
	push %rdx
	push %rbx
	mov $0x3fa, %dx
	in %dx, %al
	and $0x0f, %al
	cmp $0x02, %al
	jne 4f
	incb 0x170000
	mov $0x3f9, %dx
	mov $0x01, %al
	out %al, %dx
	jmp 9f
4:	cmp $0x04, %al
	jne 9f
	mov $0x3f8, %dx
	in %dx, %al
	mov %al, 0x170002
	incb 0x170001
9:	mov $0xfee00000, %rbx
	movl $0, 0xb0(%rbx)
	pop %rbx
	pop %rdx
	pop %rax
	iretq
`;

describeWith({ kvm: true, tools: ["as", "ld"] }, "16550A interrupts on KVM", () => {
  it("THR-empty and received-data interrupts reach the guest on IRQ 4 through the IOAPIC", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-irq-"));
    let code: number[];
    try {
      writeFileSync(join(dir, "irq.S"), IRQ_GUEST);
      execFileSync("as", ["--64", "-o", join(dir, "irq.o"), join(dir, "irq.S")]);
      execFileSync("ld", ["-Ttext=0x100000", "-e", "_start", "--oformat", "binary", "-o", join(dir, "irq.bin"), join(dir, "irq.o")]);
      code = [...readFileSync(join(dir, "irq.bin"))];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const vmm = Vmm.create({ kernel: rawElf(code), memMiB: 16 });
    const p = vmm.run({ serial: () => {} });
    // Bounded: a guest that never gets its interrupt halts forever.
    const guard = setTimeout(() => vmm.stop(), 20_000);
    setTimeout(() => vmm.sendSerialInput(Buffer.from("Z")), 100);
    const r = await p;
    clearTimeout(guard);
    vmm.close();
    expect(r).toMatchObject({ reason: "DebugExit", guestExitValue: 0x5a });
  }, 30_000);
});
