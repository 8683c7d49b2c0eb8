/**
 * The entry point of `@ts-vmm/vmm-reference` (its README is the package's page in the API docs).
 * `@mergeModuleWith <project>` lists these exports on that page rather than under a
 * sub-module named `index`, beside the package's subpath entry points.
 *
 * @module
 * @mergeModuleWith <project>
 */
export { Vmm, EARLY_WINDOW_MAX_MS } from "./vmm.js";
export type { VmConfig, VmIo, VcpuSetup, IrqchipMode, EarlyWindowReport } from "./vmm.js";
export type { RunResult, StopReason, VcpuEndState } from "./run-result.js";
export { VmmError } from "./error.js";
export type { VmmErrorCode } from "./error.js";
export { normalizeCpuid, MAX_NORMALIZED_VCPUS, KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES, CPUID_TIMING_LEAF } from "./cpu/normalize.js";
export type { NormalizeOptions } from "./cpu/normalize.js";
export { BOOT_MSRS, MAX_VCPUS, MAX_XAPIC_VCPUS, COM1_IRQ, KBD_IRQ, TSS_ADDR } from "./machine/layout.js";
export { runCli } from "./cli.js";
export type { CliStdout, CliHooks, CliStdin } from "./cli.js";
export { vmInterruptConfig, openKvm, gsiRoutes, splitIrqchipRoutes, kvmMsiAddress } from "./vmm.js";
export { CPU_FEATURES, CET_STATE_MSRS, MSR_IA32_XSS, XSS_CET_U, XSS_CET_S, XCR0_COMPONENTS, featureByName } from "./cpu/features.js";
export type { CpuFeature, FeatureKind } from "./cpu/features.js";
export { findEntry, hasBit, withBit, maskRegister, vendorOf, bitName } from "./cpu/cpuid-table.js";
export type { CpuidBit, CpuidRegister, CpuVendor } from "./cpu/cpuid-table.js";
export { loadCpuTemplate, parseCpuTemplate, BUILTIN_CPU_TEMPLATES } from "./cpu/templates.js";
export type { CpuTemplate, MaskedRegister } from "./cpu/templates.js";
export { applyCpuPolicy, parseFeatureSwitches, exposedFeatures, kernelVersion, CET_MIN_KERNEL } from "./cpu/policy.js";
export type { CpuPolicy, CpuPolicyResult, CpuRefusal, FeatureSwitch, HostKvmFacts } from "./cpu/policy.js";
export { apicvInhibits, configInhibits, AVIC_MAX_PHYSICAL_ID, X2AVIC_MAX_PHYSICAL_ID } from "./cpu/inhibits.js";
export type { ApicvInhibit, InhibitStatus, InterruptConfig, AccelerationHost } from "./cpu/inhibits.js";
export { readHostCpuid, readCpuinfoFlags, readKvmModules, hostKernelRelease, ACCEL_PARAMS } from "./cpu/host.js";
export type { KvmModules } from "./cpu/host.js";
export { cpuFeatureReport, formatCpuFeatureReport, REPORT_FEATURES } from "./cpu/report.js";
export type { CpuFeatureReport, CpuFeatureReportInput, FeatureRow } from "./cpu/report.js";
export { VirtioManager, connectIrq, BLK_POLL_MAX_US, VIRTIO_MMIO_FIRST, VIRTIO_MMIO_STRIDE } from "./devices/virtio-manager.js";
export type { VirtioDeviceConfig, VirtioDeviceSlot } from "./devices/virtio-manager.js";
export { MetricsWriter, METRICS_FLUSH_INTERVAL_MS, VMM_METRICS_VERSION, EXIT_REASONS, PIO_DEVICES } from "./metrics/index.js";
export type { MetricsLine, MetricsWriterOptions, VmmMetrics, ExitMetrics, VcpuExitMetrics, DeviceMetrics, KvmMetrics, CounterSet, PioDeviceName } from "./metrics/index.js";
export type { MmioRequest } from "./devices/mmio-mailbox.js";
export { prestartVcpuWorkers, prestartedVcpuWorkers, closePrestartedVcpuWorkers, takeVcpuWorker, prestartCount, MAX_PRESTARTED, VCPU_WORKER_URL } from "./worker-pool.js";
export type { PrestartOptions, VcpuWorkerBundle, VcpuWorkerPrestart, VcpuWorkerStart } from "./worker-pool.js";
export { parseMemorySize, parseMemorySpec, memorySpecFromJson, formatMemorySpec, checkMemoryOptions, MIN_MEMORY_MIB, MAX_MEMORY_MIB } from "./machine/memory-config.js";
export type { GuestMemoryOptions, HugePages, MemoryBackend, MemorySpec } from "./machine/memory-config.js";
export { parseMachineConfig, machineConfigBody } from "./machine/machine-config.js";
export type { MachineConfig, MachineConfigBody, MachineHugePages } from "./machine/machine-config.js";
export { readMemoryHostFacts, readHugePagePools, readThpModes, availableHugePages, guestMemfdFlagNames, GMEM_MMAP, GMEM_INIT_SHARED } from "./machine/memory-host.js";
export type { CapabilitySource, HugePagePool, MemoryHostFacts, ThpModes } from "./machine/memory-host.js";
export { planGuestMemory, memoryRequestProblem, pageSizeName } from "./machine/memory-plan.js";
export type { MemoryPlan, MemoryPlanResult } from "./machine/memory-plan.js";
export { buildGuestMemory } from "./machine/guest-memory.js";
export type { BuiltGuestMemory } from "./machine/guest-memory.js";
export { memoryCapabilityReport, formatMemoryCapabilityReport } from "./machine/memory-report.js";
export type { BackendAvailability, MemoryCapabilityReport } from "./machine/memory-report.js";
export type { VmmRunState, SnapshotInfo, RestoreOptions } from "./vmm.js";
export { mergeDiffSnapshot } from "./snapshot/take.js";
export { crc64 } from "./snapshot/crc64.js";
export { encodeSnapshotFile, decodeSnapshotFile, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION } from "./snapshot/file-format.js";
export { checkSnapshotState } from "./snapshot/state.js";
export type { SnapshotState, MemorySnapshot, MemoryRegionSnapshot } from "./snapshot/state.js";
export { saveVcpu, restoreVcpu, msrsToSave, cetMsrs } from "./snapshot/vcpu-state.js";
export type { VcpuSnapshot, VcpuStateIo } from "./snapshot/vcpu-state.js";
export { cpuMismatch } from "./snapshot/cpu-check.js";
export { SnapshotPool, MAX_POOL_SIZE, MAX_POOL_RUNNING, DEFAULT_POOL_MAX_RUNNING } from "./pool/snapshot-pool.js";
export type { SnapshotPoolOptions, PooledVm, SnapshotPoolStats } from "./pool/snapshot-pool.js";
export { startPoolApiServer, POOL_API_MAX_BODY_BYTES } from "./pool/pool-server.js";
export type { PoolApiServer, PoolApiServerOptions } from "./pool/pool-server.js";
