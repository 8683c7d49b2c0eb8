/*
 * ptp-read DEVICE...: for each PTP clock device (/dev/ptpN), prints
 *   DEVICE sec=S nsec=N realtime=R
 * where S.N is clock_gettime() of the device's dynamic POSIX clock (for a
 * virtio_rtc clock, the driver answers it with a READ request to the device)
 * and R is CLOCK_REALTIME's seconds right after; or `DEVICE error=<errno text>`.
 * Exits 1 if any device failed. Static, for the guest's busybox initramfs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The kernel's FD_TO_CLOCKID (include/linux/posix-timers.h): ((~fd) << 3) | CLOCKFD. */
#define CLOCKFD 3
#define FD_TO_CLOCKID(fd) ((clockid_t)((((unsigned int)~(fd)) << 3) | CLOCKFD))

int main(int argc, char **argv) {
  int failed = 0;
  for (int i = 1; i < argc; i++) {
    int fd = open(argv[i], O_RDONLY);
    if (fd < 0) {
      printf("%s error=%s\n", argv[i], strerror(errno));
      failed = 1;
      continue;
    }
    struct timespec ts, rt;
    if (clock_gettime(FD_TO_CLOCKID(fd), &ts) != 0) {
      printf("%s error=%s\n", argv[i], strerror(errno));
      failed = 1;
    } else {
      clock_gettime(CLOCK_REALTIME, &rt);
      printf("%s sec=%lld nsec=%ld realtime=%lld\n", argv[i], (long long)ts.tv_sec, ts.tv_nsec, (long long)rt.tv_sec);
    }
    close(fd);
  }
  return failed;
}
