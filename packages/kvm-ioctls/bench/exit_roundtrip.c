// C baseline for bench/exit-roundtrip.mjs: a CPL3 long-mode guest performs
// ITERS port writes (mode "pio", OUT to 0x3f8) or MMIO writes (mode "mmio",
// to 0xd0000050, unbacked), each an exit to this loop, then UD2 (-> shutdown).
// Prints one JSON line: {"mode":...,"exits":N,"seconds":wall,"cpu":process CPU time}.
// Built by the benchmark with gcc -O2; the guest and the page tables match
// test/guest.ts so both sides run the same machine code.
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t emit(uint8_t *p, size_t n, const uint8_t *bytes, size_t len) {
  memcpy(p + n, bytes, len);
  return n + len;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s pio|mmio ITERS\n", argv[0]);
    return 2;
  }
  int mmio = strcmp(argv[1], "mmio") == 0;
  uint32_t iters = (uint32_t)strtoul(argv[2], NULL, 10);

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  const size_t mem_size = 0x200000;
  uint8_t *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");

  // Page tables: identity 2 MiB at 0 (user), and 0xd0000000 for MMIO.
  uint64_t *q = (uint64_t *)mem;
  q[0x9000 / 8] = 0xa000 | 7;
  q[0xa000 / 8] = 0xb000 | 7;
  q[0xb000 / 8] = 0x87;
  q[0xa000 / 8 + 3] = 0xc000 | 7;
  q[0xc000 / 8 + 0x80] = 0xd0000000ull | 0x87 | 0x18;

  // Code: mov ecx, iters; loop: (out dx, al | mov [rdi], eax); dec ecx; jnz loop; ud2
  uint8_t *code = mem + 0x1000;
  size_t n = 0;
  uint8_t mov_ecx[5] = {0xb9};
  memcpy(mov_ecx + 1, &iters, 4);
  n = emit(code, n, mov_ecx, 5);
  uint8_t mov_dx[4] = {0x66, 0xba, 0xf8, 0x03};
  n = emit(code, n, mov_dx, 4);
  uint8_t mov_rdi[10] = {0x48, 0xbf};
  uint64_t addr = 0xd0000050;
  memcpy(mov_rdi + 2, &addr, 8);
  n = emit(code, n, mov_rdi, 10);
  size_t loop = n;
  if (mmio) {
    uint8_t st[2] = {0x89, 0x07};
    n = emit(code, n, st, 2);
  } else {
    uint8_t out[1] = {0xee};
    n = emit(code, n, out, 1);
  }
  uint8_t dec[2] = {0xff, 0xc9};
  n = emit(code, n, dec, 2);
  uint8_t jnz[2] = {0x75, (uint8_t)(int8_t)((int)loop - (int)(n + 2))};
  n = emit(code, n, jnz, 2);
  uint8_t ud2[2] = {0x0f, 0x0b};
  n = emit(code, n, ud2, 2);

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cr3 = 0x9000;
  sregs.cr4 = 1 << 5;
  sregs.cr0 = 0x80050033;
  sregs.efer = 0x500;
  struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 0x2b, .type = 11, .present = 1,
                           .dpl = 3, .db = 0, .s = 1, .l = 1, .g = 1};
  struct kvm_segment ds = cs;
  ds.selector = 0x33;
  ds.type = 3;
  ds.l = 0;
  ds.db = 1;
  sregs.cs = cs;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {0};
  regs.rip = 0x1000;
  regs.rflags = 2 | (3 << 12);
  regs.rsp = 0x8000;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  long exits = 0;
  double t0 = seconds(CLOCK_MONOTONIC);
  double c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
      exits++;
      continue;
    }
    if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write) {
      exits++;
      continue;
    }
    if (run->exit_reason == KVM_EXIT_SHUTDOWN) break;
    fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
    return 1;
  }
  double dt = seconds(CLOCK_MONOTONIC) - t0;
  double dc = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
  printf("{\"mode\":\"%s\",\"exits\":%ld,\"seconds\":%.6f,\"cpu\":%.6f}\n", mmio ? "mmio" : "pio", exits, dt, dc);
  return 0;
}
