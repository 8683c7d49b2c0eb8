/*
 * CPL0 part of the micro-guest: IDT, TSS, the int 0x80 gate and the #GP
 * handler that replays port I/O. On the development machine every
 * instruction here is emulated (~1 M/s), so this file stays minimal.
 */
#include "guest.h"

struct idt_entry {
	u16 off0, sel;
	u8 ist, type;
	u16 off1;
	u32 off2, zero;
} __attribute__((packed));

struct tss {
	u32 reserved0;
	u64 rsp0, rsp1, rsp2, reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3, iopb;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));
static struct tss tss __attribute__((aligned(16)));
extern u64 gdt_tss[2];
extern u8 kstack_top[];
static u8 ustack[65536] __attribute__((aligned(4096)));
volatile u64 gp_replays;

extern void isr0(void), isr1(void), isr2(void), isr3(void), isr4(void), isr5(void), isr6(void),
    isr7(void), isr8(void), isr9(void), isr10(void), isr11(void), isr12(void), isr13(void),
    isr14(void), isr15(void), isr16(void), isr17(void), isr18(void), isr19(void), isr20(void),
    isr21(void), isr128(void);
static void (*const isrs[22])(void) = {isr0,  isr1,  isr2,  isr3,  isr4,  isr5,  isr6,  isr7,
				       isr8,  isr9,  isr10, isr11, isr12, isr13, isr14, isr15,
				       isr16, isr17, isr18, isr19, isr20, isr21};
extern void enter_user(u64 rip, u64 rsp, u64 rflags) __attribute__((noreturn));
extern void user_entry(void);

static void set_gate(int vec, void (*fn)(void), int dpl) {
	u64 a = (u64)fn;
	idt[vec].off0 = (u16)a;
	idt[vec].sel = 0x08;
	idt[vec].ist = 0;
	idt[vec].type = (u8)(0x8e | (dpl << 5)); /* present, 64-bit interrupt gate */
	idt[vec].off1 = (u16)(a >> 16);
	idt[vec].off2 = (u32)(a >> 32);
}

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(p)); }
static inline void outl(u16 p, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u16 inw(u16 p) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u32 inl(u16 p) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

/*
 * Serial output honours flow control: wait for LSR.THRE (transmitter empty),
 * then send one FIFO's worth (16 bytes on a 16550A with its FIFO enabled,
 * else 1) with a single rep outsb. QEMU drops bytes written to THR while its
 * chardev is blocked, so writing without this check loses output.
 */
static u64 uart_chunk = 1;
static void uart_init(void) {
	outb(SERIAL_PORT + 1, 0x00); /* IER: no interrupts */
	outb(SERIAL_PORT + 3, 0x03); /* LCR: 8N1 */
	outb(SERIAL_PORT + 2, 0x07); /* FCR: enable and clear FIFOs */
	if ((inb(SERIAL_PORT + 2) & 0xc0) == 0xc0) uart_chunk = 16; /* IIR says FIFOs are on */
}
static void kwrite(const char *s, u64 n) {
	while (n) {
		/* Bounded wait (~100k exits): a stalled reader must not hang the guest forever. */
		for (u32 spins = 0; !(inb(SERIAL_PORT + 5) & 0x20) && spins < 100000; spins++)
			;
		u64 c = n < uart_chunk ? n : uart_chunk;
		n -= c;
		__asm__ volatile("rep outsb" : "+S"(s), "+c"(c) : "d"(SERIAL_PORT) : "memory");
	}
}

static void khex(u64 v) {
	char b[19];
	b[0] = '0'; b[1] = 'x';
	for (int i = 0; i < 16; i++) b[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
	b[18] = ' ';
	kwrite(b, 19);
}

/* Every exit goes through here: the `RESULT exit=<v>` marker, then the outl to 0xf4. */
__attribute__((noreturn)) static void kexit(u32 v) {
	char b[24] = "RESULT exit=";
	int n = 12;
	char d[10];
	int k = 0;
	u32 x = v;
	do { d[k++] = (char)('0' + x % 10); } while ((x /= 10) && k < 10);
	while (k) b[n++] = d[--k];
	b[n++] = '\n';
	kwrite(b, (u64)n);
	/* Let the UART drain (LSR.TEMT: FIFO and shift register empty) before the VMM exits:
	 * QEMU drops what is still in the transmit FIFO when the guest ends the run. Bounded. */
	for (u32 spins = 0; !(inb(SERIAL_PORT + 5) & 0x40) && spins < 100000; spins++)
		;
	outl(DEBUG_EXIT_PORT, v);
	/* A VMM that did not end the run here: stop (one outl per RESULT exit= line). */
	for (;;) __asm__ volatile("cli; hlt");
}

/* Replays an IN/OUT that faulted at CPL3 (IOPL from iretq is not honoured
 * on the development machine). Returns 1 if it was one. */
static int replay_pio(struct trap_frame *f) {
	const u8 *ip = (const u8 *)f->rip;
	int size = 4, len = 1;
	if (ip[0] == 0x66) { size = 2; ip++; len++; }
	u8 op = ip[0];
	u16 port;
	if (op == 0xe4 || op == 0xe5 || op == 0xe6 || op == 0xe7) { port = ip[1]; len++; }
	else if (op >= 0xec && op <= 0xef) port = (u16)f->rdx;
	else return 0;
	if (op == 0xe4 || op == 0xe6 || op == 0xec || op == 0xee) size = 1;
	int is_out = op == 0xe6 || op == 0xe7 || op == 0xee || op == 0xef;
	if (is_out) {
		if (size == 1) outb(port, (u8)f->rax);
		else if (size == 2) outw(port, (u16)f->rax);
		else outl(port, (u32)f->rax);
	} else {
		if (size == 1) f->rax = (f->rax & ~0xffull) | inb(port);
		else if (size == 2) f->rax = (f->rax & ~0xffffull) | inw(port);
		else f->rax = inl(port); /* 32-bit result zero-extends */
	}
	f->rip += (u64)len;
	gp_replays++;
	return 1;
}

u64 ud_syscalls;

/*
 * Interrupts (vectors 0x20-0xff). The CPL3 side (irq.c) programs the LAPIC and
 * IOAPIC and fills irq_devs[]; this handler only acknowledges: for a device
 * vector it reads the device's INTERRUPT_STATUS, writes the same bits to
 * INTERRUPT_ACK and counts; then it signals EOI (x2APIC: MSR 0x80b, xAPIC: MMIO).
 * Every instruction here is emulated on the development machine, so it is short.
 */
volatile struct irq_dev irq_devs[IRQ_MAX_DEVS];
volatile struct irq_counts irq_counts;
volatile u32 apic_mode;

static inline void wrmsr(u32 msr, u64 v) {
	__asm__ volatile("wrmsr" ::"c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}
static inline u64 rdmsr(u32 msr) {
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static void irq(u64 vec) {
	if (vec == IRQ_VEC_SPURIOUS) { irq_counts.spurious++; return; } /* no EOI for spurious */
	u64 i = vec - IRQ_VEC_DEV;
	if (vec >= IRQ_VEC_DEV && i < IRQ_MAX_DEVS && irq_devs[i].base) {
		volatile struct irq_dev *d = &irq_devs[i];
		u32 st = *(volatile u32 *)(d->base + 0x60); /* INTERRUPT_STATUS */
		*(volatile u32 *)(d->base + 0x64) = st;     /* INTERRUPT_ACK */
		d->status_or |= st;
		if (st & 1) d->used++;
		if (st & 2) d->config++;
		if (!st) d->empty++;
		d->count++;
	} else if (vec == IRQ_VEC_IPI) irq_counts.ipi++;
	else { irq_counts.other++; irq_counts.last_other = vec; }
	if (apic_mode == 2) wrmsr(0x80b, 0);
	else *(volatile u32 *)0xfee000b0ull = 0;
}

void trap(struct trap_frame *f) {
	/* On the development machine (kvm_pvm) `int $0x80` at CPL3 raises #UD
	 * instead of going through the DPL3 gate: treat that #UD as the syscall. */
	if (f->vec == 6 && (f->cs & 3) == 3 && ((const u8 *)f->rip)[0] == 0xcd &&
	    ((const u8 *)f->rip)[1] == 0x80) {
		f->rip += 2;
		f->vec = 128;
		ud_syscalls++;
	}
	if (f->vec == 128) {
		switch (f->rax) {
		case SYS_WRITE: kwrite((const char *)f->rdi, f->rsi); return;
		case SYS_EXIT: kexit((u32)f->rdi);
		case SYS_OUTB: outb((u16)f->rdi, (u8)f->rsi); return;
		case SYS_INB: f->rax = inb((u16)f->rdi); return;
		case SYS_OUTL: outl((u16)f->rdi, (u32)f->rsi); return;
		case SYS_RDMSR: f->rax = rdmsr((u32)f->rdi); return;
		case SYS_WRMSR: wrmsr((u32)f->rdi, f->rsi); return;
		case SYS_CPUID: {
			u32 *o = (u32 *)f->rsi;
			__asm__ volatile("cpuid" : "=a"(o[0]), "=b"(o[1]), "=c"(o[2]), "=d"(o[3]) : "a"((u32)f->rdi), "c"(0));
			return;
		}
		default: f->rax = (u64)-1; return;
		}
	}
	if (f->vec >= 0x20) { irq(f->vec); return; }
	if (f->vec == 13 && (f->cs & 3) == 3 && replay_pio(f)) return;
	kwrite("\nFAIL trap vector=", 18);
	khex(f->vec);
	kwrite("err=", 4);
	khex(f->err);
	kwrite("rip=", 4);
	khex(f->rip);
	u64 cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	kwrite("cr2=", 4);
	khex(cr2);
	kwrite("\n", 1);
	kexit(0x7f);
}

void kmain(void) {
	uart_init();
	/* TSS: RSP0 for traps from CPL3; I/O bitmap offset past the limit (none). */
	tss.rsp0 = (u64)kstack_top;
	tss.iopb = sizeof(tss);
	u64 base = (u64)&tss, limit = sizeof(tss) - 1;
	gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
		     (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	gdt_tss[1] = base >> 32;
	__asm__ volatile("ltr %w0" ::"r"(0x30));
	for (int v = 0; v < 22; v++) set_gate(v, isrs[v], 0);
	extern u8 irq_stubs[];
	for (int v = 0x20; v < 256; v++) set_gate(v, (void (*)(void))(irq_stubs + 16 * (v - 0x20)), 0);
	set_gate(128, isr128, 3);
	struct { u16 limit; u64 base; } __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};
	__asm__ volatile("lidt %0" ::"m"(idtr));
	/* RFLAGS for CPL3: IF=1 (no source is unmasked until irq.c programs the
	 * APICs; IF reads as 1 at CPL3 on the development machine anyway), IOPL=3
	 * (requested; not honoured on every host). */
	enter_user((u64)user_entry, (u64)(ustack + sizeof(ustack)), 0x3202);
}
