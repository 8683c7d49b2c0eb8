/*
 * tsvmm-peer: the far end of a guest's virtio-net and virtio-vsock devices in
 * the nested tier, and a minimal QMP client. Built static (gcc -static) and
 * run on both sides: in L1 as the host-side peer, and in the L2 initramfs as
 * the guest side (see src/linux-devices.ts and src/nested.ts).
 *
 *   tsvmm-peer tcp-listen ADDR PORT UP DOWN SEED SECS
 *   tsvmm-peer tcp-connect ADDR PORT UP DOWN SEED SECS
 *   tsvmm-peer unix-listen PATH UP DOWN SEED SECS
 *   tsvmm-peer unix-connect PATH PORT UP DOWN SEED SECS
 *   tsvmm-peer vsock-listen PORT UP DOWN SEED SECS
 *   tsvmm-peer vsock-connect CID PORT UP DOWN SEED SECS
 *   tsvmm-peer vsock-cid
 *   tsvmm-peer qmp PATH JSON SECS
 *
 * A stream exchange: the connecting side writes UP bytes, the accepting side
 * reads exactly UP bytes, then writes DOWN bytes, which the connecting side
 * reads. Each direction's bytes are a xorshift32 stream of SEED and the
 * direction, so a lost, repeated, reordered or foreign byte is a mismatch.
 * unix-connect speaks Firecracker's vsock convention first: it writes
 * "CONNECT <PORT>\n" and needs a line starting "OK " back (a connection closed
 * before that, as when the guest is not listening yet, is retried). Connects
 * are retried until the deadline. Listen modes write "listening" on stderr
 * once they accept connections.
 *
 * Every mode prints exactly one line on stdout and exits 0 when it worked:
 *   result=ok sent=N received=M
 *   result=fail why=<word> sent=N received=M
 * (vsock-cid: "cid=N"; qmp: "result=ok reply=<...>" or "result=fail why=...").
 * SECS bounds the whole run: at the deadline it prints why=timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t printed;
static unsigned long long sent_n, received_n;

/* Prints the one result line (once). */
static void result(int ok, const char *why) {
  if (printed) return;
  printed = 1;
  char buf[512];
  int n;
  if (ok) n = snprintf(buf, sizeof buf, "result=ok sent=%llu received=%llu\n", sent_n, received_n);
  else n = snprintf(buf, sizeof buf, "result=fail why=%s sent=%llu received=%llu\n", why, sent_n, received_n);
  if (n > 0) {
    ssize_t w = write(1, buf, (size_t)n);
    (void)w;
  }
}

static void on_alarm(int sig) {
  (void)sig;
  result(0, "timeout");
  _exit(1);
}

static int fail(const char *stage) {
  char why[160];
  snprintf(why, sizeof why, "%s:%s", stage, strerror(errno));
  for (char *p = why; *p; p++)
    if (*p == ' ') *p = '_';
  result(0, why);
  return 1;
}

static unsigned long long num(const char *s, unsigned long long max) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *s == '\0' || *end != '\0' || v > max) {
    fprintf(stderr, "tsvmm-peer: bad number %s\n", s);
    exit(2);
  }
  return v;
}

/* The byte stream of one direction: xorshift32 seeded by the seed and the direction. */
struct stream {
  unsigned int x;
};
static void stream_init(struct stream *s, unsigned int seed, unsigned int dir) {
  s->x = seed * 0x9e3779b1u + dir * 0x85ebca77u;
  if (s->x == 0) s->x = 1;
}
static unsigned char stream_next(struct stream *s) {
  unsigned int x = s->x;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  s->x = x;
  return (unsigned char)(x >> 24);
}

static int send_stream(int fd, unsigned long long n, unsigned int seed, unsigned int dir) {
  struct stream s;
  stream_init(&s, seed, dir);
  unsigned char buf[16384];
  while (sent_n < n) {
    size_t k = n - sent_n < sizeof buf ? (size_t)(n - sent_n) : sizeof buf;
    for (size_t i = 0; i < k; i++) buf[i] = stream_next(&s);
    size_t off = 0;
    while (off < k) {
      ssize_t w = send(fd, buf + off, k - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return fail("send");
      off += (size_t)w;
      sent_n += (unsigned long long)w;
    }
  }
  return 0;
}

static int recv_stream(int fd, unsigned long long n, unsigned int seed, unsigned int dir) {
  struct stream s;
  stream_init(&s, seed, dir);
  unsigned char buf[16384];
  while (received_n < n) {
    size_t want = n - received_n < sizeof buf ? (size_t)(n - received_n) : sizeof buf;
    ssize_t r = recv(fd, buf, want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail("recv");
    if (r == 0) {
      result(0, "eof");
      return 1;
    }
    for (ssize_t i = 0; i < r; i++) {
      if (buf[i] != stream_next(&s)) {
        char why[64];
        snprintf(why, sizeof why, "mismatch@%llu", received_n + (unsigned long long)i);
        received_n += (unsigned long long)i;
        result(0, why);
        return 1;
      }
    }
    received_n += (unsigned long long)r;
  }
  return 0;
}

/* Direction 1 goes from the connecting side to the accepting side, direction 2 back. */
static int exchange(int fd, int connector, unsigned long long up, unsigned long long down, unsigned int seed) {
  if (connector) {
    if (send_stream(fd, up, seed, 1) || recv_stream(fd, down, seed, 2)) return 1;
    result(1, NULL);
    close(fd);
    return 0;
  }
  if (recv_stream(fd, up, seed, 1) || send_stream(fd, down, seed, 2)) return 1;
  result(1, NULL);
  /* Let the other side read everything before the connection goes: half-close, wait a little for its close. */
  shutdown(fd, SHUT_WR);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char c;
  for (int i = 0; i < 50 && poll(&p, 1, 100) >= 0; i++) {
    if (!p.revents) continue;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break;
  }
  close(fd);
  return 0;
}

static void nap(void) {
  struct timespec t = {0, 200 * 1000 * 1000};
  nanosleep(&t, NULL);
}

static int retryable(int e) {
  return e == ECONNREFUSED || e == ENOENT || e == ETIMEDOUT || e == ECONNRESET || e == ENETUNREACH ||
         e == EHOSTUNREACH || e == EAGAIN || e == EINTR;
}

/* Connects, retrying until the deadline (alarm) ends the process. */
static int connect_retry(int family, const struct sockaddr *sa, socklen_t len) {
  for (;;) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail("socket"), -1;
    if (connect(fd, sa, len) == 0) return fd;
    int e = errno;
    close(fd);
    if (!retryable(e)) {
      errno = e;
      return fail("connect"), -1;
    }
    nap();
  }
}

static int listen_accept(int family, const struct sockaddr *sa, socklen_t len) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket"), -1;
  int one = 1;
  if (family == AF_INET) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, sa, len) < 0) return fail("bind"), -1;
  if (listen(fd, 1) < 0) return fail("listen"), -1;
  fprintf(stderr, "listening\n");
  fflush(stderr);
  int c;
  while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (c < 0) return fail("accept"), -1;
  close(fd);
  return c;
}

/* Reads one line (without the newline) into buf; returns its length, -1 on EOF or error before a newline. */
static int read_line(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (c == '\n') break;
    if (n + 1 < cap) buf[n++] = c;
  }
  buf[n] = '\0';
  return (int)n;
}

static int write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

static int unix_addr(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) {
    result(0, "path-too-long");
    return -1;
  }
  strcpy(a->sun_path, path);
  return 0;
}

/* Firecracker's host-initiated connection: CONNECT <port>\n, then OK <assigned>\n. */
static int unix_connect_fc(const char *path, unsigned int port) {
  struct sockaddr_un a;
  if (unix_addr(&a, path) < 0) return -1;
  for (;;) {
    int fd = connect_retry(AF_UNIX, (struct sockaddr *)&a, sizeof a);
    if (fd < 0) return -1;
    char req[32], line[128];
    int n = snprintf(req, sizeof req, "CONNECT %u\n", port);
    if (write_all(fd, req, (size_t)n) == 0 && read_line(fd, line, sizeof line) >= 0) {
      if (strncmp(line, "OK ", 3) == 0) return fd;
      close(fd);
      result(0, "no-OK-reply");
      return -1;
    }
    /* Closed before the reply: the guest is not listening (yet). */
    close(fd);
    nap();
  }
}

static int qmp(const char *path, const char *cmd) {
  struct sockaddr_un a;
  if (unix_addr(&a, path) < 0) return 1;
  int fd = connect_retry(AF_UNIX, (struct sockaddr *)&a, sizeof a);
  if (fd < 0) return 1;
  static char line[65536];
  if (read_line(fd, line, sizeof line) < 0) return result(0, "no-greeting"), 1;
  const char *steps[2] = {"{\"execute\":\"qmp_capabilities\"}", cmd};
  for (int i = 0; i < 2; i++) {
    if (write_all(fd, steps[i], strlen(steps[i])) < 0 || write_all(fd, "\n", 1) < 0) return fail("write");
    for (;;) {
      if (read_line(fd, line, sizeof line) < 0) return result(0, "closed"), 1;
      if (strstr(line, "\"event\"")) continue;
      break;
    }
    if (!strstr(line, "\"return\"")) {
      for (char *p = line; *p; p++)
        if (*p == ' ' || *p == '\t') *p = '_';
      printed = 1;
      printf("result=fail why=qmp-error reply=%.300s\n", line);
      return 1;
    }
  }
  for (char *p = line; *p; p++)
    if (*p == ' ' || *p == '\t') *p = '_';
  printed = 1;
  printf("result=ok reply=%.300s\n", line);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: tsvmm-peer tcp-listen ADDR PORT UP DOWN SEED SECS | tcp-connect ADDR PORT UP DOWN SEED SECS\n"
          "       | unix-listen PATH UP DOWN SEED SECS | unix-connect PATH PORT UP DOWN SEED SECS\n"
          "       | vsock-listen PORT UP DOWN SEED SECS | vsock-connect CID PORT UP DOWN SEED SECS\n"
          "       | vsock-cid | qmp PATH JSON SECS\n");
  exit(2);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) usage();
  const char *mode = argv[1];
  if (strcmp(mode, "vsock-cid") == 0) {
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    unsigned int cid = 0;
    if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) return fail("vsock-cid");
    printf("cid=%u\n", cid);
    return 0;
  }
  /* The last argument is the deadline in seconds for every other mode. */
  if (argc < 5) usage();
  unsigned int secs = (unsigned int)num(argv[argc - 1], 86400);
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  alarm(secs == 0 ? 1 : secs);
  if (strcmp(mode, "qmp") == 0) {
    if (argc != 5) usage();
    return qmp(argv[2], argv[3]);
  }
  /* Stream modes end with UP DOWN SEED SECS. */
  if (argc < 7) usage();
  unsigned long long up = num(argv[argc - 4], 1ull << 40), down = num(argv[argc - 3], 1ull << 40);
  unsigned int seed = (unsigned int)num(argv[argc - 2], 0xffffffffull);
  int fd = -1, connector = 0;
  if ((strcmp(mode, "tcp-listen") == 0 || strcmp(mode, "tcp-connect") == 0) && argc == 8) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)num(argv[3], 65535))};
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) return result(0, "bad-address"), 1;
    connector = mode[4] == 'c';
    fd = connector ? connect_retry(AF_INET, (struct sockaddr *)&a, sizeof a) : listen_accept(AF_INET, (struct sockaddr *)&a, sizeof a);
  } else if (strcmp(mode, "unix-listen") == 0 && argc == 7) {
    struct sockaddr_un a;
    if (unix_addr(&a, argv[2]) < 0) return 1;
    unlink(argv[2]);
    fd = listen_accept(AF_UNIX, (struct sockaddr *)&a, sizeof a);
  } else if (strcmp(mode, "unix-connect") == 0 && argc == 8) {
    connector = 1;
    fd = unix_connect_fc(argv[2], (unsigned int)num(argv[3], 0xffffffffull));
  } else if (strcmp(mode, "vsock-listen") == 0 && argc == 7) {
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned int)num(argv[2], 0xffffffffull)};
    fd = listen_accept(AF_VSOCK, (struct sockaddr *)&a, sizeof a);
  } else if (strcmp(mode, "vsock-connect") == 0 && argc == 8) {
    struct sockaddr_vm a = {.svm_family = AF_VSOCK,
                            .svm_cid = (unsigned int)num(argv[2], 0xffffffffull),
                            .svm_port = (unsigned int)num(argv[3], 0xffffffffull)};
    connector = 1;
    fd = connect_retry(AF_VSOCK, (struct sockaddr *)&a, sizeof a);
  } else {
    usage();
  }
  if (fd < 0) return 1;
  return exchange(fd, connector, up, down, seed);
}
