/*
 * Interrupt set-up of the micro-guest (CPL3 side): the LAPIC (x2APIC mode when
 * the VMM's CPUID offers it, else xAPIC at 0xfee00000), the IOAPIC at
 * 0xfec00000 (one edge-triggered, active-high entry per routed virtio-mmio
 * device, vector IRQ_VEC_DEV + device index, to the BSP), and the 8259 PICs
 * masked. The handler itself is in kernel.c (CPL0).
 *
 * IF: kmain enters CPL3 with IF=1 (on the development machine IF reads as 1
 * at CPL3 whatever was asked). CPL3 cannot HLT, so completion waits spin on the
 * handler's counters with a bounded TSC budget (vq_wait in virtio.c).
 */
#include "virtio.h"

#define IOAPIC 0xfec00000ull
#define LAPIC 0xfee00000ull

static u32 apic_id;
static u32 ioapic_pins;

static void lapic_write(u32 reg, u32 v) {
	if (apic_mode == 2) syscall3(SYS_WRMSR, 0x800 + (reg >> 4), v, 0);
	else *(volatile u32 *)(LAPIC + reg) = v;
}
static u32 lapic_read(u32 reg) {
	if (apic_mode == 2) return (u32)syscall3(SYS_RDMSR, 0x800 + (reg >> 4), 0, 0);
	return *(volatile u32 *)(LAPIC + reg);
}
static void ioapic_write(u32 reg, u32 v) {
	*(volatile u32 *)IOAPIC = reg;
	*(volatile u32 *)(IOAPIC + 0x10) = v;
}
static u32 ioapic_read(u32 reg) {
	*(volatile u32 *)IOAPIC = reg;
	return *(volatile u32 *)(IOAPIC + 0x10);
}

void cpuid0(u32 leaf, u32 out[4]) { syscall3(SYS_CPUID, leaf, (long)out, 0); }

int irq_setup(int want_x2apic) {
	if (apic_mode) return 0;
	u32 c1[4];
	cpuid0(1, c1);
	int has_apic = (c1[3] >> 9) & 1, has_x2 = (c1[2] >> 21) & 1;
	if (!has_apic) { fail("irq.apic", "CPUID.1:EDX.APIC is 0"); return -1; }
	u64 base = (u64)syscall3(SYS_RDMSR, 0x1b, 0, 0);
	if ((base & ~0xfffull & 0xffffffffffull) != LAPIC) { fail("irq.apic", "APIC base 0x%x", base); return -1; }
	if (want_x2apic && has_x2) {
		syscall3(SYS_WRMSR, 0x1b, (long)(base | 0xc00), 0); /* EN | EXTD */
		apic_mode = 2;
	} else {
		if (!(base & 0x800)) syscall3(SYS_WRMSR, 0x1b, (long)(base | 0x800), 0);
		apic_mode = 1;
	}
	apic_id = apic_mode == 2 ? lapic_read(0x20) : lapic_read(0x20) >> 24;
	lapic_write(0x80, 0);                      /* TPR: accept every priority */
	lapic_write(0x320, 0x10000);               /* LVT timer masked */
	lapic_write(0x350, 0x10000);               /* LINT0 masked (no ExtINT from the PIC) */
	lapic_write(0x370, 0x10000);               /* LVT error masked */
	lapic_write(0xf0, 0x100 | IRQ_VEC_SPURIOUS); /* SVR: software-enable */
	syscall3(SYS_OUTB, 0x21, 0xff, 0);         /* mask both 8259s */
	syscall3(SYS_OUTB, 0xa1, 0xff, 0);
	ioapic_pins = ((ioapic_read(1) >> 16) & 0xff) + 1;
	printf("RESULT irq.apic=%s apic_id=%u x2apic_offered=%u ioapic_pins=%u\n", apic_mode == 2 ? "x2apic" : "xapic",
	       (u64)apic_id, (u64)has_x2, (u64)ioapic_pins);
	if (ioapic_pins < 2 || ioapic_pins > 240) { fail("irq.ioapic", "version register says %u pins", (u64)ioapic_pins); return -1; }
	return 0;
}

/*
 * irq_pin_skew=N (test double only): route pin irq+N instead of the advertised
 * one, as a VMM would look whose virtio_mmio.device= GSI is not the wired one.
 */
static u32 pin_of(const struct vdev *d) { return d->irq + (u32)cmdline_u64("irq_pin_skew", 0); }

int irq_route(struct vdev *d) {
	int i = vdev_index(d);
	u32 pin = pin_of(d);
	if (!apic_mode || i < 0 || i >= IRQ_MAX_DEVS || pin >= ioapic_pins) return -1;
	irq_devs[i].base = d->base;
	u32 vec = IRQ_VEC_DEV + (u32)i;
	ioapic_write(0x10 + 2 * pin + 1, apic_id << 24);
	/* fixed, physical, active high, unmasked; edge (default) or level (irq_level=1: the
	 * line must drop once INTERRUPT_ACK clears the status, or the pin fires again after EOI) */
	u32 lo = vec | (cmdline_u64("irq_level", 0) ? 1u << 15 : 0);
	ioapic_write(0x10 + 2 * pin, lo);
	return (ioapic_read(0x10 + 2 * pin) & 0x1ffff) == lo ? 0 : -1;
}

void irq_unroute(struct vdev *d) {
	int i = vdev_index(d);
	u32 pin = pin_of(d);
	if (!apic_mode || i < 0 || i >= IRQ_MAX_DEVS || pin >= ioapic_pins) return;
	ioapic_write(0x10 + 2 * pin, 0x10000); /* masked */
}

volatile struct irq_dev *irq_of(const struct vdev *d) {
	int i = vdev_index(d);
	return i >= 0 && i < IRQ_MAX_DEVS && irq_devs[i].base ? &irq_devs[i] : NULL;
}

/* A fixed self-IPI (bench-irq): ICR with the "self" shorthand. */
void irq_self_ipi(void) {
	if (apic_mode == 2) syscall3(SYS_WRMSR, 0x830, 0x40000 | IRQ_VEC_IPI, 0);
	else lapic_write(0x300, 0x40000 | IRQ_VEC_IPI);
}
/* A LAPIC register write that delivers nothing (TPR = 0): the exit without the interrupt. */
void irq_null_write(void) { lapic_write(0x80, 0); }
