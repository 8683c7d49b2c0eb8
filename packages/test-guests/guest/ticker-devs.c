/*
 * mode=ticker's host-driven devices, for pause/resume and snapshot/restore
 * tests of devices that take host input or run timers. Each device present
 * is set up once (polled, no interrupts) and looked at on every tick:
 *   - virtio-console: writes "tick <i>\n" to port 0 (the host's peer records
 *     it) and prints what the host sent: RESULT console.rx="<text>";
 *   - virtio-balloon: when num_pages changed, acknowledges it (actual =
 *     num_pages) and prints RESULT balloon.ack=<pages>;
 *   - virtio-rtc: reads MONOTONIC (it must never go back) and prints
 *     RESULT rtc.mono=<ns>; with rtc_alarm_tick=K and rtc_alarm_ms=M, sets a
 *     MONOTONIC alarm M ms ahead at tick K (RESULT rtc.alarm_set=<tick>) and
 *     prints RESULT rtc.alarm=<tick> when its notification arrives (never
 *     before the alarm time);
 *   - virtio-vsock: prints RESULT vsock.event=<id> for each event-queue event
 *     (0: TRANSPORT_RESET); with vsock_port=P it connects to host port P at
 *     the start (RESULT vsock.connect=<op>) and again after each event
 *     (RESULT vsock.reconnect=<op>; 2 = RESPONSE, 3 = RST).
 */
#include "virtio.h"

#define T_RTC_F_ALARM (1ull << 0)
#define T_RTC_REQ_READ 0x0001
#define T_RTC_REQ_SET_ALARM 0x1004
#define T_RTC_NOTIF_ALARM 0x2000
#define T_RTC_MONO 2
#define T_VSOCK_OP_REQUEST 1

struct t_vsock_hdr {
	u64 src_cid, dst_cid;
	u32 src_port, dst_port, len;
	u16 type, op;
	u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static struct vdev *con, *bal, *rtc, *vs;
static struct vq con_rx, con_tx, bal_inf, bal_def, rtc_q, rtc_aq, vs_rx, vs_tx, vs_ev;
static u8 *con_rbuf, *con_wbuf, *rtc_req, *rtc_resp, *rtc_nbuf, *vs_rbuf, *vs_ebuf, *vs_pkt;
static u32 bal_acked;
static u64 rtc_last, rtc_alarm_at, vs_cid, vs_port, vs_next_port = 41000;
static int rtc_alarm_clock_ok;

static inline u16 g16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }
static inline u64 g64(const u8 *p) { u64 v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline void p16(u8 *p, u16 v) { p[0] = (u8)v; p[1] = (u8)(v >> 8); }
static inline void p64(u8 *p, u64 v) { for (int i = 0; i < 8; i++) p[i] = (u8)(v >> 8 * i); }

/* One used element if the device returned one; never waits. */
static int peek(struct vq *q, u32 *id, u32 *len) {
	u16 ui = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
	if (ui == q->last_used) return 0;
	volatile struct vring_used_elem *e = &q->used->ring[q->last_used % q->num];
	*id = e->id;
	*len = e->len;
	q->last_used++;
	return 1;
}

static void post(struct vq *q, u8 *base, u32 size, int n) {
	for (int i = 0; i < n; i++) {
		struct vbuf b = {(u64)(base + size * (u32)i), size, 1};
		vq_add_at(q, (u16)i, &b, 1);
	}
	q->next_desc = (u16)n;
}

static void repost(struct vq *q, u8 *base, u32 size, u32 id) {
	struct vbuf b = {(u64)(base + size * id), size, 1};
	vq_add_at(q, (u16)id, &b, 1);
	vq_kick(q);
}

static int rtc_call(u32 rlen, u32 wlen) {
	memset(rtc_resp, 0xee, wlen);
	struct vbuf b[2] = {{(u64)rtc_req, rlen, 0}, {(u64)rtc_resp, wlen, 1}};
	vq_send(&rtc_q, b, 2);
	u32 len;
	return vq_poll(&rtc_q, NULL, &len, poll_budget) == 1 ? (int)len : -1;
}

static u64 rtc_mono(int *ok) {
	memset(rtc_req, 0, 24);
	p16(rtc_req, T_RTC_REQ_READ);
	p16(rtc_req + 8, T_RTC_MONO);
	int n = rtc_call(16, 16);
	*ok = n == 16 && rtc_resp[0] == 0;
	return g64(rtc_resp + 8);
}

/* Sends a vsock REQUEST to the host's vsock_port from a fresh guest port; returns the op of the reply (0: none). */
static u32 vsock_request(void) {
	struct t_vsock_hdr *h = (struct t_vsock_hdr *)vs_pkt;
	memset(h, 0, sizeof *h);
	h->src_cid = vs_cid; h->dst_cid = 2; h->src_port = (u32)vs_next_port++; h->dst_port = (u32)vs_port;
	h->type = 1; h->op = T_VSOCK_OP_REQUEST; h->buf_alloc = 65536;
	struct vbuf b = {(u64)vs_pkt, sizeof *h, 0};
	vq_send(&vs_tx, &b, 1);
	if (vq_poll(&vs_tx, NULL, NULL, poll_budget) != 1) { fail("ticker.vsock", "tx not used"); return 0; }
	for (;;) {
		u32 id, len;
		if (vq_poll(&vs_rx, &id, &len, poll_budget) != 1 || id >= 4 || len < sizeof *h) return 0;
		const struct t_vsock_hdr *g = (const struct t_vsock_hdr *)(vs_rbuf + 1024 * id);
		u32 op = g->op, port = g->dst_port;
		repost(&vs_rx, vs_rbuf, 1024, id);
		if (port == h->src_port) return op;
		printf("RESULT vsock.rx_other=op:%u,port:%u\n", (u64)op, (u64)port);
	}
}

void ticker_devs_init(void) {
	con = vdev_find(VIRTIO_ID_CONSOLE, 0);
	if (con) {
		if (vdev_init(con, 0) || vq_setup(con, &con_rx, 0, 64) || vq_setup(con, &con_tx, 1, 64)) { fail("ticker.console", "init"); con = NULL; }
		else {
			con_rbuf = alloc(4 * 256, 64);
			con_wbuf = alloc(64, 64);
			post(&con_rx, con_rbuf, 256, 4);
			vdev_driver_ok(con);
			vq_kick(&con_rx);
		}
	}
	bal = vdev_find(VIRTIO_ID_BALLOON, 0);
	if (bal) {
		if (vdev_init(bal, 0) || vq_setup(bal, &bal_inf, 0, 64) || vq_setup(bal, &bal_def, 1, 64)) { fail("ticker.balloon", "init"); bal = NULL; }
		else { vdev_driver_ok(bal); bal_acked = vcfg32(bal, 4); }
	}
	rtc = vdev_find(VIRTIO_ID_RTC, 0);
	if (rtc) {
		int alarm = vdev_init(rtc, T_RTC_F_ALARM) == 0 && (rtc->features & T_RTC_F_ALARM);
		if (!alarm || vq_setup(rtc, &rtc_q, 0, 64) || vq_setup(rtc, &rtc_aq, 1, 16)) { fail("ticker.rtc", "init (alarm feature %u)", (u64)alarm); rtc = NULL; }
		else {
			rtc_req = alloc(24, 8);
			rtc_resp = alloc(24, 8);
			rtc_nbuf = alloc(4 * 16, 16);
			post(&rtc_aq, rtc_nbuf, 16, 4);
			vdev_driver_ok(rtc);
			vq_kick(&rtc_aq);
		}
	}
	vs = vdev_find(VIRTIO_ID_VSOCK, 0);
	if (vs) {
		if (vdev_init(vs, 0) || vq_setup(vs, &vs_rx, 0, 64) || vq_setup(vs, &vs_tx, 1, 64) || vq_setup(vs, &vs_ev, 2, 64)) { fail("ticker.vsock", "init"); vs = NULL; }
		else {
			vs_rbuf = alloc(4 * 1024, 64);
			vs_ebuf = alloc(4 * 8, 8);
			vs_pkt = alloc(sizeof(struct t_vsock_hdr), 8);
			post(&vs_rx, vs_rbuf, 1024, 4);
			post(&vs_ev, vs_ebuf, 8, 4);
			vdev_driver_ok(vs);
			vq_kick(&vs_rx);
			vq_kick(&vs_ev);
			vs_cid = vcfg64(vs, 0);
			vs_port = cmdline_u64("vsock_port", 0);
			if (vs_port) printf("RESULT vsock.connect=%u\n", (u64)vsock_request());
		}
	}
}

void ticker_devs_tick(u64 i) {
	u32 id, len;
	if (con) {
		/* "tick <i>\n" */
		char *w = (char *)con_wbuf;
		const char *pre = "tick ";
		usize n = 0;
		while (pre[n]) { w[n] = pre[n]; n++; }
		char digits[24];
		int k = 0;
		u64 v = i;
		do { digits[k++] = (char)('0' + v % 10); v /= 10; } while (v);
		while (k) w[n++] = digits[--k];
		w[n++] = '\n';
		struct vbuf b = {(u64)w, (u32)n, 0};
		vq_send(&con_tx, &b, 1);
		if (vq_poll(&con_tx, NULL, NULL, poll_budget) != 1) fail("ticker.console", "tick %u: the write was not taken", i);
		while (peek(&con_rx, &id, &len)) {
			if (id >= 4 || len > 256) { fail("ticker.console", "bad used id %u len %u", (u64)id, (u64)len); break; }
			char text[257];
			for (u32 j = 0; j < len; j++) { char c = (char)con_rbuf[256 * id + j]; text[j] = c >= 32 && c < 127 && c != '"' ? c : '.'; }
			text[len] = 0;
			printf("RESULT console.rx=\"%s\"\n", text);
			repost(&con_rx, con_rbuf, 256, id);
		}
	}
	if (bal) {
		u32 target = vcfg32(bal, 0);
		if (target != bal_acked) {
			vcfg32w(bal, 4, target);
			bal_acked = target;
			printf("RESULT balloon.ack=%u\n", (u64)target);
		}
	}
	if (rtc) {
		int ok;
		u64 now = rtc_mono(&ok);
		if (!ok) fail("ticker.rtc", "tick %u: READ MONOTONIC failed (status %u)", i, (u64)rtc_resp[0]);
		else {
			if (now < rtc_last) fail("ticker.rtc", "tick %u: MONOTONIC went back from %u to %u", i, rtc_last, now);
			rtc_last = now;
			printf("RESULT rtc.mono=%u\n", now);
		}
		if (ok && i == cmdline_u64("rtc_alarm_tick", ~0ull)) {
			rtc_alarm_at = now + cmdline_u64("rtc_alarm_ms", 1000) * 1000000ull;
			memset(rtc_req, 0, 24);
			p16(rtc_req, T_RTC_REQ_SET_ALARM);
			p64(rtc_req + 8, rtc_alarm_at);
			p16(rtc_req + 16, T_RTC_MONO);
			rtc_req[18] = 1; /* enabled */
			int n = rtc_call(24, 8);
			if (n != 8 || rtc_resp[0] != 0) fail("ticker.rtc", "SET_ALARM len %d status %u", (i64)n, (u64)rtc_resp[0]);
			else { rtc_alarm_clock_ok = 1; printf("RESULT rtc.alarm_set=%u\n", i); }
		}
		while (peek(&rtc_aq, &id, &len)) {
			if (id >= 4 || len != 16 || g16(rtc_nbuf + 16 * id) != T_RTC_NOTIF_ALARM || g16(rtc_nbuf + 16 * id + 8) != T_RTC_MONO) fail("ticker.rtc", "alarm notification id %u len %u", (u64)id, (u64)len);
			else if (!rtc_alarm_clock_ok) fail("ticker.rtc", "an alarm notification without an alarm set");
			else {
				/* The clock now, read after the notification was seen: rtc_last was read before the
				 * peek, and the alarm may fire in between (seen in CI: 30 us before its time). */
				int ok2;
				u64 seen = rtc_mono(&ok2);
				if (!ok2) fail("ticker.rtc", "tick %u: READ MONOTONIC after the alarm failed (status %u)", i, (u64)rtc_resp[0]);
				else if (seen < rtc_last) fail("ticker.rtc", "tick %u: MONOTONIC went back from %u to %u", i, rtc_last, seen);
				else if (seen < rtc_alarm_at) fail("ticker.rtc", "alarm notified %u ns before its time", rtc_alarm_at - seen);
				else printf("RESULT rtc.alarm=%u\n", i);
				if (ok2 && seen >= rtc_last) rtc_last = seen;
			}
			if (id < 4) repost(&rtc_aq, rtc_nbuf, 16, id);
		}
	}
	if (vs) {
		while (peek(&vs_ev, &id, &len)) {
			if (id >= 4 || len != 4) { fail("ticker.vsock", "event id %u len %u", (u64)id, (u64)len); break; }
			u32 ev = *(volatile u32 *)(vs_ebuf + 8 * id);
			printf("RESULT vsock.event=%u\n", (u64)ev);
			repost(&vs_ev, vs_ebuf, 8, id);
			/* TRANSPORT_RESET: every connection is gone; the CID is read again (virtio 5.10.6.7) and we connect anew. */
			vs_cid = vcfg64(vs, 0);
			if (vs_port) printf("RESULT vsock.reconnect=%u\n", (u64)vsock_request());
		}
	}
}
