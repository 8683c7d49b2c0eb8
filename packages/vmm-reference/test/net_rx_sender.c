/*
 * net_rx_sender IFNAME N SIZE WINDOW — the host side of the host-to-guest runs (bench:net, net.test.ts).
 * Sends N Ethernet frames of SIZE bytes (broadcast, ethertype 0x88b5, a 32-bit
 * little-endian sequence number after the header, then a byte pattern) into IFNAME through
 * an AF_PACKET socket, keeping at most WINDOW frames that the tap has not yet handed to its
 * reader (the VMM): a tap drops what overflows its queue, so the sender paces itself on
 * the tap's tx_packets counter (the kernel counts a frame there when the reader takes it).
 * Run inside the bench's network namespace (`ip netns exec`, which mounts that namespace's
 * /sys). Prints one line: `sent=N delivered=D dropped=X`; exits 3 (adding `stalled`) when the
 * reader took no frame for 5 s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long read_counter(const char *ifname, const char *name) {
	char path[256], buf[64];
	snprintf(path, sizeof path, "/sys/class/net/%s/statistics/%s", ifname, name);
	FILE *f = fopen(path, "r");
	if (!f) { perror(path); exit(2); }
	long long v = -1;
	if (fgets(buf, sizeof buf, f)) v = atoll(buf);
	fclose(f);
	return v;
}

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: %s IFNAME N SIZE WINDOW\n", argv[0]); return 2; }
	const char *ifname = argv[1];
	long long n = atoll(argv[2]), size = atoll(argv[3]), window = atoll(argv[4]);
	if (n < 1 || size < 60 || size > 1514 || window < 1) { fprintf(stderr, "bad arguments\n"); return 2; }
	unsigned idx = if_nametoindex(ifname);
	if (!idx) { perror(ifname); return 2; }
	/* protocol 0: send only (a socket bound to 0x88b5 would also queue a copy of each frame it sends) */
	int s = socket(AF_PACKET, SOCK_RAW, 0);
	if (s < 0) { perror("socket"); return 2; }
	struct sockaddr_ll sll;
	memset(&sll, 0, sizeof sll);
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = 0;
	sll.sll_ifindex = (int)idx;
	if (bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); return 2; }
	unsigned char frame[1514];
	memset(frame, 0xff, 6);
	const unsigned char src[6] = {0x02, 0x00, 0x00, 0x00, 0x01, 0x00};
	memcpy(frame + 6, src, 6);
	frame[12] = 0x88;
	frame[13] = 0xb5;
	for (long long i = 18; i < size; i++) frame[i] = (unsigned char)i;
	long long base = read_counter(ifname, "tx_packets");
	long long dropped0 = read_counter(ifname, "tx_dropped");
	long long sent = 0, delivered = 0, last_delivered = -1;
	double last_progress = now_s();
	while (sent < n) {
		delivered = read_counter(ifname, "tx_packets") - base;
		if (delivered != last_delivered) {
			last_delivered = delivered;
			last_progress = now_s();
		} else if (now_s() - last_progress > 5.0) {
			/* the reader (the VMM) stopped taking frames: give up instead of waiting for ever */
			printf("sent=%lld delivered=%lld dropped=%lld stalled\n", sent, delivered, read_counter(ifname, "tx_dropped") - dropped0);
			return 3;
		}
		if (sent - delivered >= window) {
			struct timespec ts = {0, 20000};
			nanosleep(&ts, NULL);
			continue;
		}
		long long room = window - (sent - delivered);
		for (long long k = 0; k < room && sent < n; k++, sent++) {
			uint32_t seq = (uint32_t)sent;
			memcpy(frame + 14, &seq, 4);
			if (send(s, frame, (size_t)size, 0) != size) {
				if (errno == ENOBUFS || errno == EAGAIN) { k--; sent--; continue; }
				perror("send");
				return 2;
			}
		}
	}
	double t0 = now_s();
	while (delivered < n && now_s() - t0 < 5.0) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		delivered = read_counter(ifname, "tx_packets") - base;
	}
	printf("sent=%lld delivered=%lld dropped=%lld\n", sent, delivered, read_counter(ifname, "tx_dropped") - dropped0);
	return 0;
}
