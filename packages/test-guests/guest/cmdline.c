/* The command line from hvm_start_info.cmdline_paddr (identity-mapped). */
#include "guest.h"

const char *cmdline(void) {
	const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)start_info_paddr;
	if (!si || si->magic != HVM_START_MAGIC || !si->cmdline_paddr) return "";
	return (const char *)si->cmdline_paddr;
}

int cmdline_get(const char *key, char *buf, usize len) {
	const char *s = cmdline();
	usize kl = strlen(key);
	while (*s) {
		while (*s == ' ') s++;
		if (!strncmp(s, key, kl) && s[kl] == '=') {
			s += kl + 1;
			usize i = 0;
			while (*s && *s != ' ' && i + 1 < len) buf[i++] = *s++;
			buf[i] = 0;
			return 1;
		}
		while (*s && *s != ' ') s++;
	}
	return 0;
}

u64 cmdline_u64(const char *key, u64 dflt) {
	char b[32];
	if (!cmdline_get(key, b, sizeof b)) return dflt;
	return parse_u64(b, NULL);
}
