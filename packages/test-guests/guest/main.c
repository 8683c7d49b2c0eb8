/* CPL3 entry of the micro-guest: reads mode= from the command line and runs it. */
#include "guest.h"

u64 poll_budget = 4000000000ull; /* TSC cycles a poll may wait (~1-2 s) */
u64 ram_top; /* end of the highest RAM range in the PVH memory map (0 if none given) */

int mode_selftest(void);
int mode_bench_exits(void);
int mode_bench_blk(void);
int mode_bench_net(void);
int mode_bench_net_rx(void);
int mode_fuzz(void);
int mode_smp(void);
int mode_bench_irq(void);
int mode_blk_durability(void);
int mode_mem(void);
int mode_ticker(void);

void user_main(void) {
	char mode[32];
	if (!cmdline_get("mode", mode, sizeof mode)) memcpy(mode, "hello", 6);
	poll_budget = cmdline_u64("poll_budget", poll_budget); /* tests that expect a timeout shorten it */
	u64 cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	printf("ts-vmm micro-guest: mode=%s cpl=%u\n", mode, cs & 3);
	printf("RESULT cmdline=\"%s\"\n", cmdline());
	const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)start_info_paddr;
	printf("RESULT start_info=0x%x cmdline_paddr=0x%x\n", (u64)start_info_paddr, si ? si->cmdline_paddr : 0);
	if (si && si->version >= 1 && si->memmap_paddr) {
		/* struct hvm_memmap_table_entry { u64 addr, size; u32 type, reserved; } */
		const u64 *m = (const u64 *)si->memmap_paddr;
		for (u32 i = 0; i < si->memmap_entries && i < 16; i++) {
			u64 a = m[3 * i], sz = m[3 * i + 1], ty = (u32)m[3 * i + 2];
			if (ty == 1 && a + sz > ram_top) ram_top = a + sz;
		}
	}
	printf("RESULT start_info.version=%u ram_top=0x%x\n", si ? (u64)si->version : 0, ram_top);
	int rc;
	if (!strncmp(mode, "hello", 6)) {
		print("hello from the ts-vmm micro-guest\n");
		rc = 0;
	} else if (!strncmp(mode, "selftest", 9)) rc = mode_selftest();
	else if (!strncmp(mode, "bench-exits", 12)) rc = mode_bench_exits();
	else if (!strncmp(mode, "bench-blk", 10)) rc = mode_bench_blk();
	else if (!strncmp(mode, "bench-net", 10)) rc = mode_bench_net();
	else if (!strncmp(mode, "bench-net-rx", 13)) rc = mode_bench_net_rx();
	else if (!strncmp(mode, "bench-irq", 10)) rc = mode_bench_irq();
	/* exit paths other than the normal one (the harness's RESULT exit= contract is tested on them) */
	else if (!strncmp(mode, "trap", 5)) { __asm__ volatile("ud2"); rc = 1; }
	else if (!strncmp(mode, "out-of-heap", 12)) { alloc(1ull << 30, 4096); rc = 1; }
	else if (!strncmp(mode, "fuzz", 5)) rc = mode_fuzz();
	else if (!strncmp(mode, "smp", 4)) rc = mode_smp();
	else if (!strncmp(mode, "blk-durability", 15)) rc = mode_blk_durability();
	else if (!strncmp(mode, "mem", 4)) rc = mode_mem();
	else if (!strncmp(mode, "ticker", 7)) rc = mode_ticker();
	else { fail("mode", "unknown mode %s", mode); rc = 2; }
	guest_exit((u32)rc); /* prints RESULT exit=<rc> (kernel.c kexit) */
}
