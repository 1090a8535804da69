/**
 * Loads a user's module by path: JavaScript with import(), TypeScript through tsx's programmatic API, so
 * that `.ts` handlers work from the compiled CLI too (plain `node`, no loader installed). tsx is an
 * optional peer dependency: without it, a `.ts` file fails with a `MissingDependencyError` that says what to do.
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { importOptional } from '../optional-dependency.ts'

const typeScriptFile = /\.(?:c|m)?tsx?$/i

/** What tsx's programmatic API offers that this needs. */
interface TsxApi {
  tsImport(url: string, parentUrl: string): Promise<unknown>
}

/** Imports `file` (a path, relative to the working directory, or a file: URL) and returns its namespace. */
export async function importFile(file: string | URL): Promise<Record<string, unknown>> {
  const url = file instanceof URL ? file.href : pathToFileURL(path.resolve(file)).href
  if (typeScriptFile.test(new URL(url).pathname)) {
    // Loaded on demand: esbuild's start-up cost is paid only by commands that load TypeScript.
    const name = path.basename(new URL(url).pathname)
    const { tsImport } = await importOptional<TsxApi>(
      'tsx/esm/api',
      'tsx',
      `TypeScript files load only with the package tsx installed: npm install tsx, or compile ${name} to JavaScript and pass the .js file`,
    )
    return (await tsImport(url, import.meta.url)) as Record<string, unknown>
  }
  return (await import(url)) as Record<string, unknown>
}
