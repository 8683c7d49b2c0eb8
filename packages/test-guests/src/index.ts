export { buildMicroGuest, GUEST_CFLAGS, GUEST_SOURCE_DIR, PACKAGE_DIR } from "./build-guest.js";
export type { BuildOptions, BuiltGuest } from "./build-guest.js";
export { TestGuestsError } from "./error.js";
export type { TestGuestsErrorCode } from "./error.js";
export { DEVICE_KINDS } from "./launcher.js";
export type {
  DeviceKind,
  DeviceSpec,
  GuestIo,
  InProcessPlan,
  LaunchPlan,
  LaunchSpec,
  ProcessPlan,
  ResolvedDevice,
  RunningVm,
  VmmLauncher,
} from "./launcher.js";
export { QEMU_BINARY, qemuArgs, qemuLauncher, qemuProvides } from "./qemu.js";
export { runGuest } from "./run-guest.js";
export { containment } from "./contain.js";
export type { Containment } from "./contain.js";
export { guestVerdict } from "./verdict.js";
export type { Verdict, VerdictInput } from "./verdict.js";
export type { GuestRun, RunGuestOptions } from "./run-guest.js";
export { parseResults, tscHz } from "./results.js";
export { kvmTscHz } from "./host-tsc.js";
export type { FailedCheck, GuestResults, ResultValue, SerialLine, SkippedCheck } from "./results.js";
export {
  BASE_CHECKS,
  DEVICE_CHECKS,
  FUZZ_CASES,
  fuzzProblems,
  fuzzReactions,
  IRQ_CHECKED_KINDS,
  QEMU_FUZZ_DEFECTS,
  selftestProblems,
} from "./expect.js";
export type { FuzzReaction, SelftestExpectation } from "./expect.js";
export { blkImageProblems, blkPattern, blkSectorImage, reportedRanges } from "./blk-image.js";
export type { BlkImageCheck, SectorRange } from "./blk-image.js";
export { consoleProblems, findProcess, processRss, smpProblems, watchBalloon, withConsolePeer } from "./peer-checks.js";
export type { BalloonWatch } from "./peer-checks.js";
export { startEchoServer } from "./echo-server.js";
export type { EchoServer } from "./echo-server.js";
export {
  BALLOON_MARKER,
  buildInitramfs,
  CPU_MARKER,
  dataDisk,
  DISK_FILE,
  DISK_MARKER,
  EARLY_BOOT_CMDLINE,
  EARLY_BOOT_MARKER,
  hostHasVirtualizationExtensions,
  INIT_MARKER,
  GUEST_NET_ADDRESS,
  LINUX_GUEST_MODULES,
  linuxGuest,
  NET_MARKER,
  VSOCK_MARKER,
  BEAT_MARKER,
  RTC_MARKER,
} from "./linux-kit.js";
export { linuxRtcGuest, rtcKernel, rtcLinuxProblems } from "./linux-rtc.js";
export type { LinuxRtcGuest, RtcKernel, RtcLinuxReading } from "./linux-rtc.js";
export type { DataDisk, InitramfsOptions, LinuxGuest } from "./linux-kit.js";
export { DEVICE_TEST_TAP, linuxDeviceProblems, linuxDeviceReport, linuxDeviceTest } from "./linux-devices.js";
export type { LinuxDeviceCheckOptions, LinuxDeviceReport, LinuxDeviceTest, LinuxDeviceTestOptions } from "./linux-devices.js";
export {
  guestHasL1State,
  guestRanStaleText,
  l1QemuArgs,
  L1_KERNEL_FAULT,
  NESTED_MARKERS,
  nestedCacheDir,
  runNested,
  NESTED_DISCARD_LOG,
  runNestedUntilSound,
  serialCopies,
  serialTransportLoss,
  shq,
} from "./nested.js";
export type { L1Module, NestedEnd, NestedGuest, NestedGuestRun, NestedOptions, NestedRun, SerialCopies } from "./nested.js";
export { NESTED_TAP_HOST, parsePeerResult } from "./nested-peers.js";
export { LOG_SPLIT_MARKER, RESTORE_MARKER } from "./nested-snapshot.js";
export type { NestedSnapshot, NestedSnapshotReport, NestedSnapshotted, SnapshotLauncher, SnapshotSignal } from "./nested-snapshot.js";
export type {
  NestedBalloonWatch,
  NestedPeerName,
  NestedPeers,
  NestedSideResults,
  NestedStream,
  NestedTcpPeer,
  NestedVsockPeer,
  PeerResult,
} from "./nested-peers.js";
export { ANCHOR_SOURCE, buildStaticTool, PEER_SOURCE, PTP_READ_SOURCE } from "./static-tool.js";
export {
  buildLayer,
  concatLayers,
  executableEntries,
  layerHash,
  QEMU_FIRMWARE,
  qemuEntries,
  sharedLibraries,
  workspacePackageEntries,
} from "./l1-image.js";
export type { Layer, LayerEntry } from "./l1-image.js";
export { parseHeartbeats } from "./heartbeat.js";
export type { Heartbeat, HeartbeatLog } from "./heartbeat.js";
