/**
 * Loads a user's module by path: JavaScript with import(), TypeScript through tsx's programmatic API, so
 * that `.ts` handlers work from the compiled CLI too (plain `node`, no loader installed).
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const typeScriptFile = /\.(?:c|m)?tsx?$/i

/** Imports `file` (a path, relative to the working directory, or a file: URL) and returns its namespace. */
export async function importFile(file: string | URL): Promise<Record<string, unknown>> {
  const url = file instanceof URL ? file.href : pathToFileURL(path.resolve(file)).href
  if (typeScriptFile.test(new URL(url).pathname)) {
    // Loaded on demand: esbuild's start-up cost is paid only by commands that load TypeScript.
    const { tsImport } = await import('tsx/esm/api')
    return (await tsImport(url, import.meta.url)) as Record<string, unknown>
  }
  return (await import(url)) as Record<string, unknown>
}
