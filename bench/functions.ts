// Where the time goes inside Postgres: each protocol function the TypeScript path runs (pgrr_send,
// pgrr_claim, pgrr_reply, pgrr_ack; a single request is handed over, with no claim), timed alone, one call
// at a time, for one request and for a batch, next to a `select 1` round trip on the same connection. What
// end-to-end runs cannot tell apart (the hops between processes, the other side's work) is out of the
// picture: this is the cost of the statements themselves.
//   node --import tsx bench/functions.ts [--rounds 5] [--calls 300] [--batch 50] [--database-url url]
//   (the options are parsed by bench/options.ts, as for `bench/run.ts --functions`)
//   node --import tsx bench/run.ts --functions
// A real responder registration (its session holds the presence lock and runs the claims and replies) and
// a caller connection, in the schema pgrr_bench_fn, dropped at the end. Rounds alternate the two sizes and
// VACUUM the table between them, as responders do; each row reports the median over the rounds of each
// round's median call.
import { pathToFileURL } from 'node:url'
import pg from 'pg'
import { migrate } from '../src/migrate.ts'
import { query } from '../src/database.ts'
import { renderStatements } from '../src/statements.ts'
import { withApplicationName } from './database-url.ts'
import { parseBenchArgs, USAGE, type FunctionOptions } from './options.ts'
import { makePayload } from './payload.ts'
import { median } from './percentile.ts'

const SCHEMA = 'pgrr_bench_fn'
const SERVICE = 'bench_fn'
/** A NOTIFY channel nobody listens on: replies are sent as they would be to a TypeScript caller. */
const REPLY_TO = 'pgrr_bench_fn_replies'

export interface FunctionTiming {
  step: string
  /** Requests per call. */
  rows: number
  /** Median time of one call, round trip included. */
  p50Us: number
  /** The same per request. */
  perRowUs: number
}

interface ClaimedRow {
  id: string
  seq: string
}

export async function timeFunctions(options: FunctionOptions): Promise<FunctionTiming[]> {
  const url = withApplicationName(options.databaseUrl, 'functions')
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  await admin.query(`drop schema if exists ${SCHEMA} cascade`)
  await migrate({ connectionString: url, schema: SCHEMA })
  const statements = renderStatements(SCHEMA)
  const caller = new pg.Client({ connectionString: url })
  const responder = new pg.Client({ connectionString: url })
  await Promise.all([caller.connect(), responder.connect()])
  const samples = new Map<string, { rows: number; medians: number[] }>()
  try {
    const [registration] = await query<{ responder_id: number; channel_id: number }>(responder, statements.register, [
      SERVICE,
      'bench',
      process.pid,
      options.batch,
    ])
    if (registration === undefined) throw new Error('registration returned nothing')
    const ids = { responder: registration.responder_id, channel: registration.channel_id }
    let cursor = 0
    const payload = makePayload(0)
    const timed = async <T>(run: () => Promise<T>): Promise<[T, number]> => {
      const start = process.hrtime.bigint()
      const result = await run()
      return [result, Number(process.hrtime.bigint() - start) / 1000]
    }
    const record = (step: string, rows: number, times: number[]): void => {
      const entry = samples.get(step) ?? { rows, medians: [] }
      entry.medians.push(median(times))
      samples.set(step, entry)
    }

    for (let round = 0; round < options.rounds; round++) {
      for (const size of [1, options.batch]) {
        await admin.query(`vacuum ${SCHEMA}.pgrr_request`)
        const times: Record<'select 1' | 'send' | 'claim' | 'reply' | 'ack', number[]> = {
          'select 1': [],
          send: [],
          claim: [],
          reply: [],
          ack: [],
        }
        const calls = Math.max(1, Math.round(options.calls / size))
        for (let call = 0; call < calls; call++) {
          times['select 1'].push((await timed(() => caller.query('select 1')))[1])
          const [sent, sendUs] = await timed(() =>
            query<{ id: string; status: string }>(caller, statements.send, [
              REPLY_TO,
              Array(size).fill(SERVICE),
              Array(size).fill(payload),
              Array(size).fill(false),
              Array(size).fill(30_000),
              Array(size).fill(null),
              Array(size).fill(null),
              [],
            ]),
          )
          if (sent.some((row) => row.status !== 'ok')) throw new Error(`pgrr_send: ${sent.find((row) => row.status !== 'ok')?.status}`)
          // A single request is handed to the responder by pgrr_send itself: no claim (see the handoff in
          // docs/benchmarks.md). A batch waits in the queue for one.
          let claimedIds = sent.map((row) => row.id)
          if (size > 1) {
            const [claimed, claimUs] = await timed(() =>
              query<ClaimedRow>(responder, statements.claim, [ids.responder, ids.channel, size, cursor]),
            )
            if (claimed.length !== size) throw new Error(`pgrr_claim took ${claimed.length} of ${size}`)
            for (const row of claimed) cursor = Math.max(cursor, Number(row.seq))
            claimedIds = claimed.map((row) => row.id)
            times.claim.push(claimUs)
          }
          const [, replyUs] = await timed(() =>
            query(responder, statements.reply, [
              ids.responder,
              claimedIds,
              Array(size).fill(false),
              Array(size).fill(payload.toUpperCase()),
              Array(size).fill(false),
              Array(size).fill(null),
              Array(size).fill(null),
            ]),
          )
          const [, ackUs] = await timed(() => query(caller, statements.ack, [claimedIds]))
          times.send.push(sendUs)
          times.reply.push(replyUs)
          times.ack.push(ackUs)
        }
        for (const [step, values] of Object.entries(times)) {
          if (values.length > 0) record(`${step}${step === 'select 1' ? '' : ` ×${size}`}`, step === 'select 1' ? 1 : size, values)
        }
      }
    }
  } finally {
    await Promise.all([caller.end().catch(() => {}), responder.end().catch(() => {})])
    await admin.query(`drop schema if exists ${SCHEMA} cascade`).catch(() => {})
    await admin.end().catch(() => {})
  }
  // In the order first recorded: select 1, then each step for one request, then for a batch.
  return [...samples.entries()].map(([step, { rows, medians }]) => {
    const p50Us = Math.round(median(medians))
    return { step: step.replace(/ ×\d+$/, ''), rows, p50Us, perRowUs: Math.round((p50Us / rows) * 10) / 10 }
  })
}

export function formatFunctionTimings(timings: FunctionTiming[]): string {
  const lines = ['step        requests/call   µs/call   µs/request']
  for (const t of timings) lines.push(`${t.step.padEnd(12)}${String(t.rows).padStart(13)}${String(t.p50Us).padStart(10)}${String(t.perRowUs).padStart(13)}`)
  return lines.join('\n')
}

export async function runFunctionTimings(options: FunctionOptions): Promise<number> {
  const timings = await timeFunctions(options)
  process.stdout.write(`${formatFunctionTimings(timings)}\n`)
  return 0
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const parsed = parseBenchArgs(['--functions', ...process.argv.slice(2)])
  if (parsed.kind === 'functions') process.exitCode = await runFunctionTimings(parsed.options)
  else process.stdout.write(`${USAGE}\n`)
}
