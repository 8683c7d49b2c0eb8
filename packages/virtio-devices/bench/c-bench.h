// What bench/tap-writev.c and bench/tap-rx.c share: attaching to the tap, the clock, and the
// figure both print (the median of 5 rounds' ns per frame, as "c_ns_per_frame <x>", which
// bench/rig.ts reads).
#ifndef TS_VMM_C_BENCH_H
#define TS_VMM_C_BENCH_H
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

/** Attaches to tap `name` as the device does (a 12-byte vnet header), opened with `flags`; -1 after perror. */
static int open_tap(const char* name, int flags) {
  int fd = open("/dev/net/tun", O_RDWR | flags);
  if (fd < 0) return perror("open /dev/net/tun"), -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) return perror("TUNSETIFF"), -1;
  int hdrsz = 12;
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) return perror("TUNSETVNETHDRSZ"), -1;
  return fd;
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/** Prints the median of the 5 rounds in `r` (sorting them). */
static void print_median_of_5(double r[5]) {
  qsort(r, 5, sizeof r[0], cmp_double);
  printf("c_ns_per_frame %.1f\n", r[2]);
}
#endif
