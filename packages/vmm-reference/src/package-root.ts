/**
 * This package's root directory as a file URL with a trailing slash: src/ and
 * dist/ (and the bundles in dist/) all sit one level below it, so paths to
 * packaged files (cpu-templates/, dist/) resolve the same from each.
 */
export const PACKAGE_ROOT = new URL("..", import.meta.url);
