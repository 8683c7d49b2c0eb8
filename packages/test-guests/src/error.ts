/** Conditions a {@link TestGuestsError} reports. */
export type TestGuestsErrorCode =
  /** An option is out of range or malformed (checked before anything is started). */
  | "InvalidArgument"
  /** The chosen VMM cannot provide a requested device (see {@link VmmLauncher.provides}). */
  | "Unsupported"
  /** gcc or ld failed to build the micro-guest. */
  | "BuildFailed"
  /** The VMM process could not be started. */
  | "SpawnFailed"
  /** A Debian package could not be fetched or unpacked. */
  | "DownloadFailed"
  /** A required host tool (gcc, cpio, apt-get, ...) is missing. */
  | "MissingTool";

/** The one error class of `@ts-vmm/test-guests`. */
export class TestGuestsError extends Error {
  /** What went wrong, as a stable string. */
  readonly code: TestGuestsErrorCode;

  /**
   * @param code - the condition
   * @param message - a human-readable explanation
   * @param options - `cause`: the lower-level error, if any
   */
  constructor(code: TestGuestsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TestGuestsError";
    this.code = code;
  }
}
