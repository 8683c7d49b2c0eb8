// The error of the API server and of the socket file it listens on.

/** Why {@link startApiServer} failed. */
export type ApiServerErrorCode =
  /** Another process is listening on the socket path. */
  | "SocketInUse"
  /** The path exists and is not a socket (a file we will not delete). */
  | "PathNotSocket"
  /** listen(2) or unlink(2) failed; see `cause`. */
  | "ListenFailed";

/** An error of {@link startApiServer}. */
export class ApiServerError extends Error {
  override readonly name = "ApiServerError";
  readonly code: ApiServerErrorCode;

  constructor(code: ApiServerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
