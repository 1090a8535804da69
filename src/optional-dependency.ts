/**
 * Optional packages, loaded on first use: the package depends on `pg` alone, and a feature that needs more
 * (metrics, tracing, TypeScript handler files) says which package to install when it is missing, with a
 * {@link MissingDependencyError}, instead of failing at import time for every application.
 */
import { createRequire } from 'node:module'
import { MissingDependencyError } from './errors.ts'

const require = createRequire(import.meta.url)

/**
 * `require(packageName)` (for CommonJS packages, whose one instance the application shares), or a
 * {@link MissingDependencyError} whose message is `message` when the package itself is not installed. A
 * package that is installed but broken (one of its own dependencies missing) fails with its own error.
 */
export function requireOptional<T>(packageName: string, message: string): T {
  try {
    return require(packageName) as T
  } catch (error) {
    if (isMissing(error, 'MODULE_NOT_FOUND', packageName)) throw new MissingDependencyError(packageName, message, { cause: error })
    throw error
  }
}

/** `import(specifier)` of a module of `packageName`, with the same translation as {@link requireOptional}. */
export async function importOptional<T>(specifier: string, packageName: string, message: string): Promise<T> {
  try {
    return (await import(specifier)) as T
  } catch (error) {
    if (isMissing(error, 'ERR_MODULE_NOT_FOUND', packageName)) throw new MissingDependencyError(packageName, message, { cause: error })
    throw error
  }
}

/** Whether `error` says that `packageName` itself (not something it imports) cannot be found. */
function isMissing(error: unknown, code: string, packageName: string): boolean {
  if ((error as { code?: unknown } | null)?.code !== code) return false
  const text = (error as Error).message
  // Node: "Cannot find module 'x'" (require) or "Cannot find package 'x' imported from …" (import).
  return text.includes(`'${packageName}'`) || text.includes(`'${packageName}/`)
}
