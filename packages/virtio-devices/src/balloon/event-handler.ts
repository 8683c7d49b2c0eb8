// Routing only: which queue index is which balloon queue, the statistics
// timer, and the continuation of work that ran out of budget in one turn.
import { VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ } from "./constants.js";

/** What a balloon queue is for. */
export type BalloonQueueRole = "inflate" | "deflate" | "stats" | "reporting";

/**
 * The queue roles in index order for the negotiated features. Queues of
 * features the driver did not take do not use up an index: Linux numbers its
 * queues consecutively over what it negotiated (inflate, deflate, then statsq
 * if STATS_VQ, then reporting_vq if REPORTING), and so does this device.
 */
export function queueRoles(features: bigint): BalloonQueueRole[] {
  const roles: BalloonQueueRole[] = ["inflate", "deflate"];
  if (features & VIRTIO_BALLOON_F_STATS_VQ) roles.push("stats");
  if (features & VIRTIO_BALLOON_F_REPORTING) roles.push("reporting");
  return roles;
}

/** The device's side of the events. @internal */
export interface BalloonHandlers {
  /** Work on a queue for one turn; true if the budget ran out with work left. */
  queue(role: BalloonQueueRole): boolean;
  /** The statistics interval elapsed. */
  statsTick(): void;
}

/**
 * Routes queue notifications to the device by role, runs the statistics
 * timer, and schedules (with setImmediate) the next turn of a queue whose
 * work did not fit one. Holds no device logic.
 * @internal
 */
export class BalloonEventHandler {
  readonly #h: BalloonHandlers;
  #roles: readonly BalloonQueueRole[] = [];
  readonly #scheduled = new Map<BalloonQueueRole, NodeJS.Immediate>();
  #timer: NodeJS.Timeout | undefined;
  #intervalS = 0;
  #active = false;
  #paused = false;

  constructor(handlers: BalloonHandlers) {
    this.#h = handlers;
  }

  /** Starts routing for an activation with these features; polls statistics every `statsIntervalS` (0: never). */
  activate(features: bigint, statsIntervalS: number): void {
    this.reset();
    this.#roles = queueRoles(features);
    this.#active = true;
    this.setStatsInterval(this.#roles.includes("stats") ? statsIntervalS : 0);
  }

  /** The role of queue `index` in this activation. */
  roleOf(index: number): BalloonQueueRole | undefined {
    return this.#roles[index];
  }

  /** The index of `role` in this activation, or -1. */
  indexOf(role: BalloonQueueRole): number {
    return this.#roles.indexOf(role);
  }

  /** A queue notification. */
  notify(index: number): void {
    const role = this.#roles[index];
    if (role === undefined || !this.#active || this.#paused || this.#scheduled.has(role)) return; // a scheduled turn will see the new chains
    this.#run(role);
  }

  /** Pause: no timer, no scheduled turn, no notification served, until {@link BalloonEventHandler.resume}. */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    for (const t of this.#scheduled.values()) clearImmediate(t);
    this.#scheduled.clear();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Restarts the statistics timer (a whole interval from now) and gives every queue one turn. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (!this.#active) return;
    this.setStatsInterval(this.#intervalS);
    for (const role of this.#roles) if (!this.#scheduled.has(role)) this.#run(role);
  }

  #run(role: BalloonQueueRole): void {
    if (!this.#active || this.#paused) return;
    if (this.#h.queue(role)) {
      this.#scheduled.set(
        role,
        setImmediate(() => {
          this.#scheduled.delete(role);
          this.#run(role);
        }),
      );
    }
  }

  /** (Re)starts the statistics timer; 0 stops it. */
  setStatsInterval(seconds: number): void {
    this.#intervalS = seconds;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (!this.#active || this.#paused || seconds <= 0) return;
    this.#timer = setInterval(() => this.#h.statsTick(), Math.max(1, Math.round(seconds * 1000)));
    this.#timer.unref();
  }

  /** The statistics interval in use (0: not polling). */
  get statsIntervalS(): number {
    return this.#intervalS;
  }

  /** Whether a turn is scheduled (work left from a previous turn). */
  get pending(): boolean {
    return this.#scheduled.size > 0;
  }

  /** Stops everything: no timer, no scheduled turn, no routing. */
  reset(): void {
    this.#active = false;
    for (const t of this.#scheduled.values()) clearImmediate(t);
    this.#scheduled.clear();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#roles = [];
  }
}
