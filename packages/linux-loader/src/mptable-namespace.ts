// The `mptable` namespace of the public API.
export { buildMpTable as build, MPTABLE_MAX_SIZE as MAX_SIZE } from "./mptable.js";
