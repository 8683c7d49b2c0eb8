/*
 * mode=mem: guest RAM seen from both sides, and what touching it costs.
 *   probe=ADDR  prints the u64 the VMM left at ADDR (RESULT mem.probe=0x...) and
 *               writes its complement back, so the VMM can check both directions.
 *   touch=1     writes one u64 in every 4 KiB page of RAM above 32 MiB (the
 *               first touch: host page faults and KVM's mapping of each page).
 *   random=N    then N read-modify-writes of a u64 in random 4 KiB pages of
 *               the same RAM (TLB and page-walk cost; everything is mapped).
 * RAM comes from the PVH memory map (type 1 entries), capped at the 8 GiB the
 * page tables map. Times are raw TSC cycles (RESULT mem.*_cycles=).
 */
#include "guest.h"

#define TOUCH_BASE (32ull << 20) /* above the image, the heap and the page tables */
#define MAP_LIMIT (8ull << 30)   /* entry.S identity-maps 0..8 GiB */

struct range { u64 start, pages; };

static int ram_ranges(struct range *out, int max) {
	const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)start_info_paddr;
	int n = 0;
	if (!si || si->version < 1 || !si->memmap_paddr) return 0;
	const u64 *m = (const u64 *)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries && i < 16 && n < max; i++) {
		u64 a = m[3 * i], end = m[3 * i] + m[3 * i + 1], ty = (u32)m[3 * i + 2];
		if (ty != 1) continue;
		if (a < TOUCH_BASE) a = TOUCH_BASE;
		if (end > MAP_LIMIT) end = MAP_LIMIT;
		a = (a + 4095) & ~4095ull;
		end &= ~4095ull;
		if (end <= a) continue;
		out[n].start = a;
		out[n].pages = (end - a) >> 12;
		n++;
	}
	return n;
}

int mode_mem(void) {
	char buf[24];
	if (cmdline_get("probe", buf, sizeof buf)) {
		const char *end;
		u64 addr = parse_u64(buf, &end);
		if (addr & 7 || addr + 8 > ram_top) {
			fail("mem.probe", "address 0x%x is not an aligned RAM address", addr);
		} else {
			volatile u64 *p = (volatile u64 *)addr;
			u64 v = *p;
			printf("RESULT mem.probe=0x%x\n", v);
			*p = ~v;
			pass("mem.probe");
		}
	}
	struct range r[4];
	int nr = ram_ranges(r, 4);
	u64 pages = 0;
	for (int i = 0; i < nr; i++) pages += r[i].pages;
	printf("RESULT mem.pages=%u\n", pages);
	if (cmdline_u64("touch", 0)) {
		u64 t0 = rdtsc();
		for (int i = 0; i < nr; i++) {
			volatile u64 *p = (volatile u64 *)r[i].start;
			for (u64 k = 0; k < r[i].pages; k++) p[k << 9] = k; /* one u64 per 4 KiB page */
		}
		u64 t1 = rdtsc();
		printf("RESULT mem.touch_pages=%u\nRESULT mem.touch_cycles=%u\n", pages, t1 - t0);
		pass("mem.touch");
	}
	u64 n = cmdline_u64("random", 0);
	if (n && pages) {
		srand64(cmdline_u64("seed", 0x5eed));
		u64 sum = 0, t0 = rdtsc();
		for (u64 i = 0; i < n; i++) {
			u64 k = rand64() % pages;
			int j = 0;
			while (k >= r[j].pages) k -= r[j++].pages;
			volatile u64 *p = (volatile u64 *)(r[j].start + (k << 12) + ((i & 63) << 3));
			sum += *p;
			*p = sum;
		}
		u64 t1 = rdtsc();
		printf("RESULT mem.random_n=%u\nRESULT mem.random_cycles=%u\nRESULT mem.random_sum=0x%x\n", n, t1 - t0, sum);
		pass("mem.random");
	}
	return failures ? 1 : 0;
}
