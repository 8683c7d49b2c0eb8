/* Freestanding helpers of the micro-guest (CPL3): strings, output, results, allocation. */
#include "guest.h"
#include <stdarg.h>

void *memset(void *d, int c, usize n) {
	u8 *p = d;
	while (n--) *p++ = (u8)c;
	return d;
}
void *memcpy(void *d, const void *s, usize n) {
	u8 *p = d;
	const u8 *q = s;
	while (n--) *p++ = *q++;
	return d;
}
int memcmp(const void *a, const void *b, usize n) {
	const u8 *p = a, *q = b;
	for (; n; n--, p++, q++)
		if (*p != *q) return *p < *q ? -1 : 1;
	return 0;
}
usize strlen(const char *s) {
	usize n = 0;
	while (s[n]) n++;
	return n;
}
int strncmp(const char *a, const char *b, usize n) {
	for (; n; n--, a++, b++) {
		if (*a != *b) return (u8)*a < (u8)*b ? -1 : 1;
		if (!*a) return 0;
	}
	return 0;
}

/* Output is line-buffered: one SYS_WRITE (one rep outsb at CPL0) per line. */
static char outbuf[512];
static usize outlen;
static void flush(void) {
	if (outlen) syscall3(SYS_WRITE, (long)outbuf, (long)outlen, 0);
	outlen = 0;
}
static void putc_(char c) {
	outbuf[outlen++] = c;
	if (c == '\n' || outlen == sizeof(outbuf)) flush();
}
void puts_raw(const char *s, usize n) {
	while (n--) putc_(*s++);
}
void print(const char *s) { puts_raw(s, strlen(s)); }
void print_u64(u64 v) {
	char b[21];
	int i = 20;
	b[i] = 0;
	do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
	print(b + i);
}
void print_hex(u64 v) {
	char b[17];
	int i = 16;
	b[i] = 0;
	do { b[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
	print(b + i);
}
/* %s %c %d %u %x (all take 64-bit arguments: long/u64) and %% */
static void vprintf_(const char *fmt, va_list ap) {
	for (; *fmt; fmt++) {
		if (*fmt != '%') { putc_(*fmt); continue; }
		switch (*++fmt) {
		case 's': { const char *s = va_arg(ap, const char *); print(s ? s : "(null)"); break; }
		case 'c': putc_((char)va_arg(ap, int)); break;
		case 'd': { i64 v = va_arg(ap, i64); if (v < 0) { putc_('-'); v = -v; } print_u64((u64)v); break; }
		case 'u': print_u64(va_arg(ap, u64)); break;
		case 'x': print_hex(va_arg(ap, u64)); break;
		case '%': putc_('%'); break;
		default: putc_('?'); if (!*fmt) return;
		}
	}
}
void printf_(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vprintf_(fmt, ap);
	va_end(ap);
}

int failures;
void pass(const char *check) { printf("PASS %s\n", check); }
void fail(const char *check, const char *fmt, ...) {
	failures++;
	printf("FAIL %s ", check);
	va_list ap;
	va_start(ap, fmt);
	vprintf_(fmt, ap);
	va_end(ap);
	putc_('\n');
}
void skip(const char *check, const char *reason) { printf("SKIP %s %s\n", check, reason); }

/* Ends the run: the CPL0 side prints `RESULT exit=<value>` on a line of its own, then writes 0xf4. */
__attribute__((noreturn)) void guest_exit(u32 value) {
	if (outlen && outbuf[outlen - 1] != '\n') putc_('\n');
	flush();
	syscall3(SYS_EXIT, value, 0, 0);
	for (;;) ;
}

static u64 rs = 0x9e3779b97f4a7c15ull;
void srand64(u64 seed) { rs = seed ? seed : 1; }
u64 rand64(void) { /* xorshift64* */
	rs ^= rs >> 12; rs ^= rs << 25; rs ^= rs >> 27;
	return rs * 0x2545f4914f6cdd1dull;
}

/* Bump allocator over the RAM after the image (the harness gives >= 32 MiB). */
extern u8 _image_end[];
#define HEAP_LIMIT (24ull << 20)
static u64 heap_next;
void *alloc(usize size, usize align) {
	if (!heap_next) heap_next = ((u64)_image_end + 4095) & ~4095ull;
	u64 p = (heap_next + align - 1) & ~(u64)(align - 1);
	if (p + size > HEAP_LIMIT) { fail("alloc", "out of heap size=%u", (u64)size); guest_exit(3); }
	heap_next = p + size;
	memset((void *)p, 0, size);
	return (void *)p;
}
void *alloc_mark(void) { if (!heap_next) alloc(0, 1); return (void *)heap_next; }
void alloc_reset(void *mark) { heap_next = (u64)mark; }

u64 parse_u64(const char *s, const char **end) {
	u64 v = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		for (;; s++) {
			int d;
			if (*s >= '0' && *s <= '9') d = *s - '0';
			else if (*s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
			else if (*s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
			else break;
			v = v * 16 + (u64)d;
		}
	} else {
		for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (u64)(*s - '0');
	}
	if (end) *end = s;
	return v;
}
