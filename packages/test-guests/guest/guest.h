/* Shared declarations of the ts-vmm micro-guest. Freestanding: no libc. */
#ifndef TG_GUEST_H
#define TG_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned long usize;

#define NULL ((void *)0)
#define barrier() __asm__ volatile("" ::: "memory")
#define mb() __asm__ volatile("mfence" ::: "memory")

/* Ports and addresses the guest uses (documented in DESIGN.md). */
#define SERIAL_PORT 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define BENCH_PORT 0x510e      /* unused port: every access is a VMM exit */
#define BENCH_MMIO 0xd0000000u /* unused MMIO address (no RAM, no device) */

/* Syscall numbers for int 0x80 (rax = number, rdi/rsi/rdx = arguments). */
#define SYS_WRITE 1   /* write(buf, len) to the serial port, one rep outsb */
#define SYS_EXIT 2    /* exit(value): outl value to 0xf4 */
#define SYS_OUTB 3    /* outb(port, value) */
#define SYS_INB 4     /* inb(port) -> rax */
#define SYS_OUTL 5    /* outl(port, value) */
#define SYS_RDMSR 6   /* rdmsr(msr) -> rax */
#define SYS_WRMSR 7   /* wrmsr(msr, value) */
#define SYS_CPUID 8   /* cpuid(leaf, u32 out[4]) at CPL0: the VMM's CPUID, not the host's */

/* Interrupt vectors (irq.c programs the IOAPIC and LAPIC, kernel.c handles them). */
#define IRQ_VEC_DEV 0x30       /* + index of the device in the virtio_mmio.device= list */
#define IRQ_MAX_DEVS 32
#define IRQ_VEC_IPI 0xf0       /* self-IPI (bench-irq) */
#define IRQ_VEC_SPURIOUS 0xff
/* Per-device interrupt record, written by the CPL0 handler, read at CPL3. */
struct irq_dev {
	u64 base;      /* virtio-mmio window (set by irq.c); 0 = vector not routed */
	u64 count;     /* interrupts taken */
	u64 used;      /* with INTERRUPT_STATUS bit 0 (used buffer) */
	u64 config;    /* with bit 1 (configuration change) */
	u64 empty;     /* with INTERRUPT_STATUS 0 (spurious for this device) */
	u64 status_or; /* OR of every status read */
};
struct irq_counts { u64 ipi, spurious, other, last_other; };
extern volatile struct irq_dev irq_devs[IRQ_MAX_DEVS];
extern volatile struct irq_counts irq_counts;
extern volatile u32 apic_mode; /* 0 not set up, 1 xAPIC, 2 x2APIC (read by the handler for EOI) */

/* Xen's struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
struct hvm_start_info {
	u32 magic; /* 0x336ec578 */
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};
#define HVM_START_MAGIC 0x336ec578u

/* kernel side (CPL0) */
struct trap_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vec, err, rip, cs, rflags, rsp, ss;
};
extern u32 start_info_paddr;
extern volatile u64 gp_replays;

/* user side (CPL3) */
void user_main(void);
long syscall3(long nr, long a, long b, long c);
__attribute__((noreturn)) void guest_exit(u32 value);

/* lib.c */
void *memset(void *d, int c, usize n);
void *memcpy(void *d, const void *s, usize n);
int memcmp(const void *a, const void *b, usize n);
usize strlen(const char *s);
int strncmp(const char *a, const char *b, usize n);
void puts_raw(const char *s, usize n);
void print(const char *s);
void print_u64(u64 v);
void print_hex(u64 v);
void printf_(const char *fmt, ...);
#define printf printf_
static inline u64 rdtsc(void) {
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static inline void pause_(void) { __asm__ volatile("pause"); }
u64 rand64(void);
void srand64(u64 seed);
void *alloc(usize size, usize align);
void alloc_reset(void *mark);
void *alloc_mark(void);
u64 parse_u64(const char *s, const char **end);

/* cmdline.c */
const char *cmdline(void);
/* Copies the value of key=... into buf (NUL-terminated); returns 1 if found. */
int cmdline_get(const char *key, char *buf, usize len);
u64 cmdline_u64(const char *key, u64 dflt);

/* Result lines */
void pass(const char *check);
void fail(const char *check, const char *fmt, ...);
void skip(const char *check, const char *reason);
extern int failures;

/* Timing: a TSC-cycle budget for polls; see main.c */
extern u64 poll_budget;
extern u64 ram_top;
#endif
