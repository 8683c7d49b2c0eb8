import { GuestMemoryError } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import type { ActivateContext, DeviceState, VirtioDevice } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import { RtcAlarms } from "./alarm.js";
import { systemRtcClock, TAI_MINUS_UTC_SECONDS, type RtcHostClock } from "./clock.js";
import {
  RTC_ALARMQ,
  RTC_MAX_REQUEST_SIZE,
  RTC_NOTIF_ALARM_SIZE,
  RTC_REQUESTQ,
  VIRTIO_ID_RTC,
  VIRTIO_RTC_CLOCK_MONOTONIC,
  VIRTIO_RTC_CLOCK_TAI,
  VIRTIO_RTC_CLOCK_UTC,
  VIRTIO_RTC_F_ALARM,
  VIRTIO_RTC_NOTIF_ALARM,
  VIRTIO_RTC_S_EINVAL,
  VIRTIO_RTC_S_EIO,
  VIRTIO_RTC_S_ENODEV,
  VIRTIO_RTC_S_EOPNOTSUPP,
  VIRTIO_RTC_S_OK,
} from "./constants.js";
import { rtcMetrics, type RtcMetrics } from "./metrics.js";
import { checkRtcState, type VirtioRtcState } from "./persist.js";
import { handleRtcRequest, type RtcClockInfo, type RtcRequestContext } from "./request.js";

/** Queue size offered for the requestq and the alarmq. */
const QUEUE_SIZE = 64;
/** Requests (or alarmq buffers) handled per notification before yielding to the event loop. */
const BATCH = 64;
/** The clocks, by id: UTC (host CLOCK_REALTIME), TAI (UTC + the TAI offset), MONOTONIC (host CLOCK_MONOTONIC). */
const CLOCK_TYPES: readonly number[] = [VIRTIO_RTC_CLOCK_UTC, VIRTIO_RTC_CLOCK_TAI, VIRTIO_RTC_CLOCK_MONOTONIC];

/** Options of {@link VirtioRtc}. */
export interface VirtioRtcOptions {
  /** Host clocks and timers (default {@link systemRtcClock}); tests pass a clock they advance by hand. */
  readonly clock?: RtcHostClock;
  /** Offer VIRTIO_RTC_F_ALARM: an alarm on every clock and the alarmq. Default true. */
  readonly alarm?: boolean;
  /** TAI − UTC in whole seconds, 0 to 1000 (default {@link TAI_MINUS_UTC_SECONDS}, 37). */
  readonly taiOffsetSeconds?: number;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly requestq: Queue;
  /** The alarmq, when VIRTIO_RTC_F_ALARM was negotiated. */
  readonly alarmq: Queue | undefined;
  readonly req: RtcRequestContext;
  broken: boolean;
}

/**
 * virtio-rtc (virtio 1.4 "RTC Device", id 17), as Linux 6.16's virtio_rtc
 * driver uses it: three clocks (0 UTC, 1 TAI, 2 MONOTONIC), the requestq with
 * CFG, CLOCK_CAP, CROSS_CAP, READ, READ_CROSS (always EOPNOTSUPP: no
 * cross-timestamps) and, with VIRTIO_RTC_F_ALARM, READ_ALARM, SET_ALARM and
 * SET_ALARM_ENABLED, with expirations notified on the alarmq (queue 1).
 *
 * Every response is exactly its message's response size; a malformed request
 * gets the spec's error status (see the table in [DESIGN.md](../../DESIGN.md)). A broken ring, or a
 * response buffer outside guest memory, sets DEVICE_NEEDS_RESET. Alarms are
 * not kept across a device reset; at most one host timer per clock runs.
 */
export class VirtioRtc implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_RTC;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [QUEUE_SIZE, QUEUE_SIZE];
  /** No device configuration space. */
  readonly configSize = 0;
  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  readonly deviceFeatures: bigint;
  /** The clock types by clock id (VIRTIO_RTC_CLOCK_UTC, _TAI, _MONOTONIC). */
  readonly clockTypes: readonly number[] = CLOCK_TYPES;
  /** TAI − UTC in seconds. */
  readonly taiOffsetSeconds: number;
  /** Counters since creation. */
  readonly metrics: RtcMetrics = rtcMetrics();
  readonly #clock: RtcHostClock;
  readonly #alarmOffered: boolean;
  readonly #infos: readonly RtcClockInfo[];
  readonly #alarms: RtcAlarms;
  /** Added to host CLOCK_MONOTONIC so that MONOTONIC never goes back across a restore onto another host. */
  #monoOffset = 0n;
  #lastMono = 0n;
  #active: Active | undefined;
  #paused = false;

  /**
   * @param opts - host clock, alarm feature, TAI offset.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad option.
   */
  constructor(opts: VirtioRtcOptions = {}) {
    const alarm = opts.alarm ?? true;
    const tai = opts.taiOffsetSeconds ?? TAI_MINUS_UTC_SECONDS;
    if (typeof alarm !== "boolean") throw new VirtioDeviceError("InvalidArgument", "alarm must be a boolean");
    if (!Number.isInteger(tai) || tai < 0 || tai > 1000) throw new VirtioDeviceError("InvalidArgument", `taiOffsetSeconds must be a whole number from 0 to 1000, got ${String(tai)}`);
    this.#clock = opts.clock ?? systemRtcClock;
    this.#alarmOffered = alarm;
    this.taiOffsetSeconds = tai;
    this.deviceFeatures = alarm ? VIRTIO_RTC_F_ALARM : 0n;
    this.#infos = CLOCK_TYPES.map((type) => ({ type, alarm }));
    this.#alarms = new RtcAlarms(
      CLOCK_TYPES.map((type, id) => ({ read: () => this.#read(id), steps: type !== VIRTIO_RTC_CLOCK_MONOTONIC })),
      this.#clock,
      () => {
        this.metrics.alarmExpirations++;
        this.#deliver();
      },
    );
  }

  /** Reads clock `id` in nanoseconds (UTC, TAI, or MONOTONIC, which never decreases). */
  #read(id: number): bigint {
    const type = CLOCK_TYPES[id];
    if (type === VIRTIO_RTC_CLOCK_MONOTONIC) {
      const m = this.#clock.monotonicNs() + this.#monoOffset;
      if (m > this.#lastMono) this.#lastMono = m;
      return this.#lastMono;
    }
    const utc = this.#clock.realtimeNs();
    return type === VIRTIO_RTC_CLOCK_TAI ? utc + BigInt(this.taiOffsetSeconds) * 1_000_000_000n : utc;
  }

  /** Clock ids with an alarm expiration not yet delivered on the alarmq. */
  get pendingAlarms(): readonly number[] {
    return this.#alarms.pending;
  }

  /** Host timers armed for alarms (at most one per clock). */
  get alarmTimers(): number {
    return this.#alarms.timers;
  }

  /** No configuration space: reads as zeros. */
  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }
  /** No configuration space: writes are ignored. */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const requestq = ctx.queues[RTC_REQUESTQ];
    if (requestq === undefined) return;
    const alarmNegotiated = (ctx.features & VIRTIO_RTC_F_ALARM) !== 0n;
    const alarms = this.#alarms;
    const req: RtcRequestContext = {
      clocks: this.#infos,
      alarmNegotiated,
      read: (id) => this.#read(id),
      readAlarm: (id) => alarms.read(id),
      setAlarm: (id, time, enabled) => alarms.set(id, time, enabled),
      setAlarmEnabled: (id, enabled) => alarms.setEnabled(id, enabled),
    };
    this.#active = { ctx, requestq, alarmq: alarmNegotiated ? ctx.queues[RTC_ALARMQ] : undefined, req, broken: false };
    if (this.#paused) return; // resume starts the timers
    alarms.start();
    this.#deliver();
  }

  /**
   * Cancels every alarm timer and stops answering requests and delivering
   * notifications. Alarms keep their times (in their clock's nanoseconds) and
   * queued notifications stay queued; the clocks themselves go on (they are
   * the host's).
   */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#alarms.stop();
  }

  /**
   * Re-arms the alarm timers from the clocks as they read now (an alarm that
   * came due during the pause expires at once), then answers waiting
   * requests and delivers queued notifications.
   */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#active === undefined) return;
    this.#alarms.start();
    this.#requests();
    this.#deliver();
  }

  /** Whether the device is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Device reset: stops the data path, cancels every alarm timer, forgets alarms and undelivered notifications. */
  reset(): void {
    this.#active = undefined;
    this.#alarms.reset();
  }

  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return false;
  }

  /** {@inheritDoc VirtioDevice.state} */
  state(): VirtioRtcState {
    const a = this.#alarms.state();
    return {
      deviceType: VIRTIO_ID_RTC,
      clocks: [...CLOCK_TYPES],
      alarmOffered: this.#alarmOffered,
      taiOffsetSeconds: this.taiOffsetSeconds,
      alarms: a.alarms,
      pending: a.pending,
      monotonicNs: this.#read(CLOCK_TYPES.indexOf(VIRTIO_RTC_CLOCK_MONOTONIC)).toString(),
    };
  }

  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    const s = checkRtcState(state, { clocks: CLOCK_TYPES, alarmOffered: this.#alarmOffered, taiOffsetSeconds: this.taiOffsetSeconds });
    // MONOTONIC continues from the saved reading if this host's CLOCK_MONOTONIC is behind it.
    const saved = BigInt(s.monotonicNs);
    const behind = saved - this.#clock.monotonicNs();
    this.#monoOffset = behind > 0n ? behind : 0n;
    this.#lastMono = saved;
    this.#alarms.restore(s.alarms, s.pending);
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    if (index === RTC_REQUESTQ) this.#requests();
    else if (index === RTC_ALARMQ) this.#deliver();
  }

  #broken(a: Active, reason: string): void {
    a.broken = true;
    this.metrics.needsReset++;
    a.ctx.interrupt.needsReset(`virtio-rtc: ${reason}`);
  }

  /** Pops one chain; undefined at the end (or when broken). With EVENT_IDX, asks for the next notification and looks once more. */
  #pop(a: Active, q: Queue): DescriptorChain | undefined {
    try {
      const chain = q.popDescriptorChain(a.ctx.mem);
      if (chain !== undefined || !q.eventIdx || !q.enableNotification(a.ctx.mem)) return chain;
      return q.popDescriptorChain(a.ctx.mem);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `queue ${q === a.requestq ? "requestq" : "alarmq"}: ${e.code}: ${e.message}`);
      return undefined;
    }
  }

  #signal(a: Active, q: Queue, index: number): void {
    if (this.#active !== a || a.broken) return;
    try {
      if (q.needsNotification(a.ctx.mem)) a.ctx.interrupt.signalUsedQueue(index);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `used ring: ${e.message}`);
    }
  }

  #requests(): void {
    const a = this.#active;
    if (a === undefined || a.broken || this.#paused || !a.requestq.ready) return;
    let n = 0;
    let chain: DescriptorChain | undefined;
    while ((chain = this.#pop(a, a.requestq)) !== undefined) {
      this.#handle(a, chain);
      if (a.broken || this.#active !== a) return;
      if (++n >= BATCH) {
        // A guest refilling as fast as we answer must not starve other devices: yield, then go on.
        setImmediate(() => this.#requests());
        break;
      }
    }
    this.#signal(a, a.requestq, RTC_REQUESTQ);
  }

  #handle(a: Active, chain: DescriptorChain): void {
    const { mem } = a.ctx;
    let req: Uint8Array | undefined = new Uint8Array(Math.min(chain.readableLength, RTC_MAX_REQUEST_SIZE));
    try {
      chain.readInto(mem, req);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      req = undefined; // the request is not in guest memory: EINVAL
    }
    const resp = handleRtcRequest(req, chain.readableLength, chain.writableLength, a.req);
    try {
      chain.writeFrom(mem, resp.bytes);
      a.requestq.addUsed(mem, chain.head, resp.bytes.length);
    } catch (e) {
      if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
      this.#broken(a, `response to request ${chain.head}: ${(e as Error).message}`);
      return;
    }
    const m = this.metrics;
    m.requests++;
    switch (resp.status) {
      case undefined: m.noStatus++; break;
      case VIRTIO_RTC_S_OK: m.ok++; break;
      case VIRTIO_RTC_S_EOPNOTSUPP: m.eopnotsupp++; break;
      case VIRTIO_RTC_S_ENODEV: m.enodev++; break;
      case VIRTIO_RTC_S_EINVAL: m.einval++; break;
      case VIRTIO_RTC_S_EIO: m.eio++; break;
    }
  }

  /** Writes queued alarm notifications into alarmq buffers while both exist. */
  #deliver(): void {
    const a = this.#active;
    if (a === undefined || a.broken || this.#paused || a.alarmq === undefined || !a.alarmq.ready) return;
    const q = a.alarmq;
    const { mem } = a.ctx;
    let used = false;
    let n = 0;
    let id: number | undefined;
    while ((id = this.#alarms.peekPending()) !== undefined) {
      if (n++ >= BATCH) {
        setImmediate(() => this.#deliver());
        break;
      }
      const chain = this.#pop(a, q);
      if (chain === undefined) break;
      try {
        if (chain.writableLength < RTC_NOTIF_ALARM_SIZE) {
          // The driver must give room for a whole notification: this buffer is returned empty, the notification waits.
          this.metrics.shortAlarmBuffers++;
          q.addUsed(mem, chain.head, 0);
        } else {
          const notif = new Uint8Array(RTC_NOTIF_ALARM_SIZE);
          const dv = new DataView(notif.buffer);
          dv.setUint16(0, VIRTIO_RTC_NOTIF_ALARM, true);
          dv.setUint16(8, id, true);
          chain.writeFrom(mem, notif);
          q.addUsed(mem, chain.head, RTC_NOTIF_ALARM_SIZE);
          this.#alarms.shiftPending();
          this.metrics.notifications++;
        }
        used = true;
      } catch (e) {
        if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
        this.#broken(a, `alarmq buffer ${chain.head}: ${(e as Error).message}`);
        return;
      }
    }
    if (used) this.#signal(a, q, RTC_ALARMQ);
  }
}
