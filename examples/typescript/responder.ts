/**
 * A responder: serves `uppercase` (or the channel given as the first argument) until SIGINT/SIGTERM, then
 * drains (finishes what it is handling) and exits.
 *
 *   DATABASE_URL=postgres://… [PGRR_SCHEMA=public] node --import tsx examples/typescript/responder.ts [channel]
 *
 * The handler upper-cases text; an empty payload makes it throw an error with a code, which callers get as
 * a RemoteError (TypeScript) or SQLSTATE PR003 with the code as DETAIL (SQL). In your project, import from
 * 'pg-request-reply' instead of the repository's source.
 */
import { serve, type HandlerContext } from '../../src/index.ts'

const channel = process.argv[2] ?? 'uppercase'

const server = await serve(
  { connectionString: process.env.DATABASE_URL, schema: process.env.PGRR_SCHEMA ?? 'public' },
  channel,
  (text: string, ctx: HandlerContext) => {
    if (text === '') throw Object.assign(new Error(`request ${ctx.id}: nothing to upper-case`), { code: 'EMPTY' })
    return text.toUpperCase()
  },
  { concurrency: 16 },
)
console.log(`serving ${channel}`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.log(`${signal}: draining`)
    void server.drain()
  })
}
await server.closed
