/* CPL3 entry of the micro-guest: reads mode= from the command line and runs it. */
#include "guest.h"

u64 poll_budget = 4000000000ull; /* TSC cycles a poll may wait (~1-2 s) */

int mode_selftest(void);
int mode_bench_exits(void);
int mode_bench_blk(void);
int mode_fuzz(void);
int mode_smp(void);
int mode_blk_durability(void);

void user_main(void) {
	char mode[32];
	if (!cmdline_get("mode", mode, sizeof mode)) memcpy(mode, "hello", 6);
	u64 cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	printf("ts-vmm micro-guest: mode=%s cpl=%u\n", mode, cs & 3);
	printf("RESULT cmdline=\"%s\"\n", cmdline());
	const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)start_info_paddr;
	printf("RESULT start_info=0x%x cmdline_paddr=0x%x\n", (u64)start_info_paddr, si ? si->cmdline_paddr : 0);
	int rc;
	if (!strncmp(mode, "hello", 6)) {
		print("hello from the ts-vmm micro-guest\n");
		rc = 0;
	} else if (!strncmp(mode, "selftest", 9)) rc = mode_selftest();
	else if (!strncmp(mode, "bench-exits", 12)) rc = mode_bench_exits();
	else if (!strncmp(mode, "bench-blk", 10)) rc = mode_bench_blk();
	else if (!strncmp(mode, "fuzz", 5)) rc = mode_fuzz();
	else if (!strncmp(mode, "smp", 4)) rc = mode_smp();
	else if (!strncmp(mode, "blk-durability", 15)) rc = mode_blk_durability();
	else { fail("mode", "unknown mode %s", mode); rc = 2; }
	printf("RESULT exit=%u\n", (u64)rc);
	guest_exit((u32)rc);
}
