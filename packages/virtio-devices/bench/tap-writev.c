// The C loop bench/tx.ts compares the device's transmit path with: writev(2) of a 12-byte
// virtio_net_hdr and one frame to a tap, `n` times, after `warm` untimed writes.
// Usage (inside the tap's network namespace): tap-writev TAP N WARM FRAME_BYTES
// Prints the median of 5 rounds' ns per frame as "c_ns_per_frame <x>".
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "c-bench.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s TAP N WARM FRAME_BYTES\n", argv[0]);
    return 2;
  }
  long n = atol(argv[2]), warm = atol(argv[3]), size = atol(argv[4]);
  if (n <= 0 || warm < 0 || size < 14 || size > 65535) return 2;
  int fd = open_tap(argv[1], 0);
  if (fd < 0) return 1;
  unsigned char hdr[12] = {0};
  unsigned char* frame = calloc(1, size);
  memset(frame, 0xff, 6);                      // broadcast
  memcpy(frame + 6, "\x52\x54\x00\x12\x34\x56", 6);
  frame[12] = 0x88, frame[13] = 0xb5;          // IEEE local experimental ethertype: dropped
  struct iovec iov[2] = {{hdr, sizeof hdr}, {frame, (size_t)size}};
  for (long i = 0; i < warm; i++)
    if (writev(fd, iov, 2) < 0) return perror("writev"), 1;
  double r[5];
  for (int k = 0; k < 5; k++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
      if (writev(fd, iov, 2) < 0) return perror("writev"), 1;
    r[k] = (now_ns() - t0) / n;
  }
  print_median_of_5(r);
  return 0;
}
