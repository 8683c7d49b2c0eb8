import { TestGuestsError } from "./error.js";
import type { GuestIo, InProcessPlan, RunningVm } from "./launcher.js";
import { bounded, type Ended, type RunControl } from "./serial-sink.js";

/**
 * Runs an {@link InProcessPlan}. `start()`, the run and `stop()` are all under
 * the timeout: a `start()` that has not settled when the timeout passes ends
 * the run (the VM is stopped if it arrives within `stopTimeoutMs`), and a
 * `stop()` or `exited` that does not settle within `stopTimeoutMs` is
 * reported in `problems` instead of hanging the run.
 */
export async function runInProcess(plan: InProcessPlan, ctl: RunControl): Promise<Ended> {
  const problems: string[] = [];
  let timedOut = false;
  let stoppedOnSerial = false;
  let interrupt: () => void = () => {};
  const interrupted = new Promise<"interrupted">((res) => (interrupt = () => res("interrupted")));
  let callbackError: unknown;
  const io: GuestIo = {
    serial: (b) => {
      try {
        ctl.sink.push(b);
        if (!stoppedOnSerial && !timedOut && ctl.matches()) {
          stoppedOnSerial = true;
          interrupt();
        }
      } catch (e) {
        callbackError ??= e;
        interrupt();
      }
    },
  };
  const timer = setTimeout(() => {
    timedOut = true;
    interrupt();
  }, ctl.timeoutMs);
  let vm: RunningVm | undefined;
  let stopped = false;
  const stopBounded = async (): Promise<void> => {
    if (!vm || stopped) return;
    stopped = true;
    const s = await bounded(vm.stop(), ctl.stopTimeoutMs);
    if (!s.ok) {
      problems.push(
        s.error === undefined ? `stop() did not settle within ${ctl.stopTimeoutMs} ms` : `stop() rejected: ${String((s.error as Error)?.message ?? s.error)}`,
      );
    }
  };
  try {
    const startP = Promise.resolve().then(() => plan.start(io));
    const first = await Promise.race([
      startP.then(
        (v) => ({ vm: v }),
        (cause: unknown) => {
          throw new TestGuestsError("SpawnFailed", `start() failed: ${String((cause as Error)?.message ?? cause)}`, { cause });
        },
      ),
      interrupted,
    ]);
    if (first === "interrupted") {
      problems.push(`start() had not settled when the run ended (${timedOut ? `timeout of ${ctl.timeoutMs} ms` : "stopped"})`);
      const late = await bounded(startP, ctl.stopTimeoutMs);
      if (late.ok) vm = late.value;
      else if (late.error === undefined) problems.push(`start() did not settle within ${ctl.stopTimeoutMs} ms more: the VM may still be starting`);
      return { vmmExit: null, vmmExitValue: null, timedOut, stoppedOnSerial, vmmLog: "", problems };
    }
    vm = first.vm;
    const ended = await Promise.race([vm.exited.then((e) => ({ e })), interrupted]);
    let exited: { readonly guestExitValue: number | null; readonly detail?: string } | null = null;
    if (ended === "interrupted") {
      await stopBounded();
      const e = await bounded(vm.exited, ctl.stopTimeoutMs);
      if (e.ok) exited = e.value;
      else if (e.error === undefined) problems.push(`exited did not settle within ${ctl.stopTimeoutMs} ms of stop()`);
      else throw e.error;
    } else exited = ended.e;
    if (callbackError !== undefined) throw callbackError;
    return {
      vmmExit: null,
      vmmExitValue: exited?.guestExitValue ?? null,
      timedOut,
      stoppedOnSerial,
      vmmLog: exited?.detail ?? "",
      problems,
    };
  } finally {
    clearTimeout(timer);
    await stopBounded();
  }
}
