/*
 * cpuid-dump: prints, as one JSON object on stdout, what a CPU-feature policy
 * needs to know about the machine it runs on:
 *   - "host": the CPUID instruction's leaves (basic, hypervisor 0x4000_0000
 *     range, extended), with the subleaves of the indexed leaves;
 *   - "kvmSupported": KVM_GET_SUPPORTED_CPUID (when /dev/kvm opens);
 *   - "kernel": uname -r; "moduleParams": the avic/x2apic-related parameters
 *     of kvm_amd / kvm_intel found under /sys/module.
 * Built static (gcc -static -O2) so it runs in a bare initramfs; see
 * record-tcg-l1.sh. Written for ts-vmm; struct layouts from <linux/kvm.h>.
 */
#include <cpuid.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

static int first = 1;

static void entry(unsigned fn, unsigned idx, unsigned flags, unsigned a, unsigned b, unsigned c, unsigned d) {
  printf("%s\n    {\"function\":%u,\"index\":%u,\"flags\":%u,\"eax\":%u,\"ebx\":%u,\"ecx\":%u,\"edx\":%u}",
         first ? "" : ",", fn, idx, flags, a, b, c, d);
  first = 0;
}

/* Leaves whose ECX input selects a subleaf, and how many subleaves to dump. */
static unsigned subleaves(unsigned fn) {
  switch (fn) {
  case 0x4: case 0x8000001d: return 8;
  case 0x7: case 0x14: case 0x17: case 0x18: case 0x1d: case 0x1e: case 0x20: case 0x23: case 0x24: return 4;
  case 0xb: case 0x1f: case 0x80000026: return 6;
  case 0xd: return 64;
  case 0xf: case 0x10: case 0x12: case 0x80000020: return 8;
  default: return 0;
  }
}

static void host_range(unsigned base) {
  unsigned a, b, c, d;
  __cpuid_count(base, 0, a, b, c, d);
  unsigned max = a;
  /* No such range (no hypervisor, or an old CPU): nothing to dump. */
  if (base != 0 && (max < base || max > base + 0xff)) return;
  for (unsigned fn = base; fn <= max; fn++) {
    unsigned n = subleaves(fn);
    if (n == 0) {
      __cpuid_count(fn, 0, a, b, c, d);
      entry(fn, 0, 0, a, b, c, d);
    } else {
      for (unsigned i = 0; i < n; i++) {
        __cpuid_count(fn, i, a, b, c, d);
        entry(fn, i, 1, a, b, c, d);
      }
    }
  }
}

static void param(const char *mod, const char *name) {
  char path[256], buf[64];
  snprintf(path, sizeof path, "/sys/module/%s/parameters/%s", mod, name);
  FILE *f = fopen(path, "r");
  if (!f) return;
  if (fgets(buf, sizeof buf, f)) {
    buf[strcspn(buf, "\n")] = 0;
    printf("%s\n    \"%s.%s\": \"%s\"", first ? "" : ",", mod, name, buf);
    first = 0;
  }
  fclose(f);
}

int main(void) {
  struct utsname u;
  uname(&u);
  printf("{\n  \"kernel\": \"%s\",\n  \"host\": [", u.release);
  first = 1;
  host_range(0);
  host_range(0x40000000);
  host_range(0x80000000);
  printf("\n  ],\n  \"kvmSupported\": ");
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    printf("null");
  } else {
    int nent = 256;
    struct kvm_cpuid2 *c = calloc(1, sizeof *c + nent * sizeof(struct kvm_cpuid_entry2));
    c->nent = nent;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) < 0) {
      printf("null");
    } else {
      printf("[");
      first = 1;
      for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        entry(e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx);
      }
      printf("\n  ]");
    }
    free(c);
    close(kvm);
  }
  printf(",\n  \"moduleParams\": {");
  first = 1;
  static const char *names[] = {"avic", "force_avic", "enable_ipiv", "enable_apicv", "nested", "npt", "ept", "x2apic", 0};
  static const char *mods[] = {"kvm_amd", "kvm_intel", 0};
  for (int m = 0; mods[m]; m++)
    for (int n = 0; names[n]; n++) param(mods[m], names[n]);
  printf("\n  }\n}\n");
  return 0;
}
