/*
 * mode=smp: starts the application processors with INIT-SIPI-SIPI through the
 * local APIC (broadcast to all but self), checks that `cpus=N` - 1 of them
 * arrive, and that each keeps counting. Each AP goes through the real-mode
 * trampoline in entry.S to long mode and counts at CPL3 (native speed even
 * where CPL0 is emulated).
 */
#include "guest.h"

#define LAPIC 0xfee00000ull
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define AP_TRAMP 0x8000
#define MAX_APS 511 /* entry.S has AP_SLOTS = 512 stacks */

extern const u8 ap_tramp_start[], ap_tramp_end[];
extern volatile u32 ap_next;
volatile u64 ap_counters[MAX_APS + 1];

static u8 ap_ustacks[MAX_APS][4096] __attribute__((aligned(4096)));
extern void enter_user_arg(u64 rip, u64 rsp, u64 rflags, u64 arg) __attribute__((noreturn));

/* CPL3, on an AP: count forever (the BSP ends the VM). */
__attribute__((noreturn)) static void ap_user(u64 index) {
	for (;;) ap_counters[index]++;
}

/*
 * CPL0, on an AP, entered from the trampoline. APs share the BSP's IDT but
 * have no TSS of their own, so they must not trap at CPL3: their user code is
 * a counting loop that cannot fault.
 */
/* ap_park=1: APs halt once they arrived (many vCPUs on few host CPUs: nothing spins). */
static volatile u32 ap_park;

void ap_main(u32 index) {
	if (index > MAX_APS || ap_park) for (;;) __asm__ volatile("cli; hlt");
	enter_user_arg((u64)ap_user, (u64)(ap_ustacks[index - 1] + 4096), 0x2, index);
}

static void lapic_w(u32 reg, u32 v) { *(volatile u32 *)(LAPIC + reg) = v; }
static u32 lapic_r(u32 reg) { return *(volatile u32 *)(LAPIC + reg); }
static void wait_cycles(u64 c) { u64 t = rdtsc(); while (rdtsc() - t < c) pause_(); }
static void icr_send(u32 lo) {
	lapic_w(LAPIC_ICR_HI, 0);
	lapic_w(LAPIC_ICR_LO, lo);
	for (int i = 0; i < 100000 && (lapic_r(LAPIC_ICR_LO) & (1u << 12)); i++) pause_(); /* delivery status */
}

int mode_smp(void) {
	/* cpus= is required: without it a VMM that starts no AP would pass with "0 of 0". */
	u64 cpus = cmdline_u64("cpus", 0);
	if (cpus < 1 || cpus > MAX_APS + 1) { fail("smp.cpus", "cpus=%u missing or out of range", cpus); return 1; }
	memcpy((void *)AP_TRAMP, ap_tramp_start, (usize)(ap_tramp_end - ap_tramp_start));
	ap_park = (u32)cmdline_u64("ap_park", 0);
	printf("RESULT smp.lapic_id=%u\n", (u64)(lapic_r(0x20) >> 24));
	lapic_w(LAPIC_SVR, 0x1ff); /* software-enable the BSP's APIC, spurious vector 0xff */
	icr_send(0x000c4500);      /* INIT, level assert, all excluding self */
	wait_cycles(20000000);     /* >= 10 ms at <= 2 GHz */
	for (int i = 0; i < 2; i++) {
		icr_send(0x000c4600 | (AP_TRAMP >> 12)); /* SIPI, vector 0x08 -> 0x8000 */
		wait_cycles(1000000);
	}
	u64 want = cpus - 1, t0 = rdtsc();
	u64 wait = cmdline_u64("ap_wait", poll_budget * 4);
	while (ap_next - 1 < want && rdtsc() - t0 < wait) pause_();
	/* Wait a little longer: an AP beyond cpus - 1 is as wrong as a missing one. */
	u64 extra_t = rdtsc();
	while (rdtsc() - extra_t < 50000000ull) pause_();
	u64 started = ap_next - 1;
	printf("RESULT smp.started=%u\n", started);
	if (started != want) { fail("smp.started", "%u of %u APs started", started, want); return 1; }
	pass("smp.started");
	if (ap_park) { skip("smp.counting", "ap_park=1: the APs halt after they arrived"); return 0; }
	static u64 before[MAX_APS + 1];
	for (u64 i = 1; i <= started; i++) before[i] = ap_counters[i];
	wait_cycles(200000000);
	int stalled = 0;
	for (u64 i = 1; i <= started; i++) {
		u64 d = ap_counters[i] - before[i];
		printf("RESULT smp.ap%u_count_delta=%u\n", i, d);
		stalled += d == 0;
	}
	if (stalled) { fail("smp.counting", "%u APs did not count", (u64)stalled); return 1; }
	pass("smp.counting");
	return 0;
}
