#define _GNU_SOURCE
// The receive side of bench/rx.ts. Frames reach a tap's reader when the kernel transmits on the
// tap: a sender process sends them through an AF_PACKET socket bound to it (broadcast, an
// experimental ethertype, FRAME_BYTES each), BATCH (at most 480, below the tap's queue of 500)
// each time it reads a byte from GO, and writes a byte to DONE when they are queued.
//
//   tap-rx serve TAP BATCH FRAME_BYTES GO DONE  the sender on FIFOs (bench/rx.ts reads with the device)
//   tap-rx read TAP N BATCH FRAME_BYTES         the C loop the device is compared with: attach to TAP
//                                               (vnet header of 12 bytes, non-blocking), fork the sender
//                                               on pipes, then 5 rounds of N frames: BATCH sent (untimed)
//                                               and read back with readv(2) into a 12 + FRAME_BYTES buffer
//                                               (the next of 64, 4 KiB apart in a shared memfd mapping, as
//                                               a receive ring's) and a 64 KiB spare (timed); prints the
//                                               median ns per frame read as "c_ns_per_frame <x>"
//
// Run inside the tap's network namespace; the tap must be up.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "c-bench.h"

static int packet_socket(const char* ifname, struct sockaddr_ll* to) {
  int s = socket(AF_PACKET, SOCK_RAW, 0);
  if (s < 0) return perror("socket(AF_PACKET)"), -1;
  memset(to, 0, sizeof *to);
  to->sll_family = AF_PACKET;
  to->sll_ifindex = (int)if_nametoindex(ifname);
  to->sll_halen = 6;
  memset(to->sll_addr, 0xff, 6);
  if (to->sll_ifindex == 0) return perror("if_nametoindex"), -1;
  return s;
}

static int send_frames(int s, const struct sockaddr_ll* to, const unsigned char* frame, long size, long n) {
  for (long i = 0; i < n; i++) {
    if (sendto(s, frame, (size_t)size, 0, (const struct sockaddr*)to, sizeof *to) != size) return perror("sendto"), -1;
  }
  return 0;
}

/** Sends `batch` frames for each byte read from `in`, a byte to `out` after each batch; returns at EOF. */
static int serve(int s, const struct sockaddr_ll* to, const unsigned char* frame, long size, long batch, int in, int out) {
  char c;
  while (read(in, &c, 1) == 1) {
    if (send_frames(s, to, frame, size, batch) != 0) return 1;
    if (write(out, &c, 1) != 1) return perror("write"), 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  int serve_mode = argc == 7 && strcmp(argv[1], "serve") == 0;
  int read_mode = argc == 6 && strcmp(argv[1], "read") == 0;
  if (!serve_mode && !read_mode) {
    fprintf(stderr, "usage: %s serve TAP BATCH FRAME_BYTES GO DONE | read TAP N BATCH FRAME_BYTES\n", argv[0]);
    return 2;
  }
  long n = read_mode ? atol(argv[3]) : 1;
  long batch = atol(argv[read_mode ? 4 : 3]);
  long size = atol(argv[read_mode ? 5 : 4]);
  if (n <= 0 || batch <= 0 || batch > 480 || size < 14 || size > 1514) return 2;
  unsigned char* frame = calloc(1, (size_t)size);
  memset(frame, 0xff, 6);  // broadcast
  memcpy(frame + 6, "\x52\x54\x00\x65\x43\x21", 6);
  frame[12] = 0x88, frame[13] = 0xb5;  // IEEE local experimental ethertype
  struct sockaddr_ll to;
  int s = packet_socket(argv[2], &to);
  if (s < 0) return 1;
  if (serve_mode) {
    int in = open(argv[5], O_RDONLY), out = in < 0 ? -1 : open(argv[6], O_WRONLY);
    if (in < 0 || out < 0) return perror("open the FIFOs"), 1;
    return serve(s, &to, frame, size, batch, in, out);
  }

  int fd = open_tap(argv[2], O_NONBLOCK);
  if (fd < 0) return 1;
  // The buffers as the device has them: 64 of them 4 KiB apart in a shared memfd mapping (guest
  // memory), filled in turn, not one buffer that stays in the cache.
  int mfd = memfd_create("tap-rx", 0);
  if (mfd < 0 || ftruncate(mfd, 64 * 4096) < 0) return perror("memfd"), 1;
  unsigned char* bufs = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (bufs == MAP_FAILED) return perror("mmap"), 1;
  memset(bufs, 0, 64 * 4096);
  unsigned char* spare = malloc(65536);
  struct iovec iov[2] = {{bufs, 12 + (size_t)size}, {spare, 65536}};
  long slot = 0;
  int go[2], done[2];
  if (pipe(go) < 0 || pipe(done) < 0) return perror("pipe"), 1;
  pid_t child = fork();
  if (child < 0) return perror("fork"), 1;
  if (child == 0) {
    close(go[1]);
    close(done[0]);
    _exit(serve(s, &to, frame, size, batch, go[0], done[1]));
  }
  close(go[0]);
  close(done[1]);
  double r[5];
  for (int k = 0; k < 5; k++) {
    double ns = 0;
    long got = 0;
    while (got < n) {
      char c = 'x';
      if (write(go[1], &c, 1) != 1 || read(done[0], &c, 1) != 1) return fprintf(stderr, "the sender stopped\n"), 1;
      double t0 = now_ns();
      for (;;) {
        iov[0].iov_base = bufs + (slot++ & 63) * 4096;
        ssize_t m = readv(fd, iov, 2);
        if (m < 0 && errno == EAGAIN) break;
        if (m < 0) return perror("readv"), 1;
        got++;
      }
      ns += now_ns() - t0;
    }
    r[k] = ns / got;
  }
  close(go[1]);
  waitpid(child, NULL, 0);
  print_median_of_5(r);
  return 0;
}
