// The `e820` namespace of the public API.
export { buildE820 as build, ramBelow, E820Type as Type, E820_MAX_ENTRIES as MAX_ENTRIES, DEFAULT_RESERVED } from "./e820.js";
