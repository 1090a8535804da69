// Where the time goes inside Postgres: each protocol function the TypeScript path runs, timed alone, one
// call at a time, for one request (pgrr_send_one, pgrr_reply_one, pgrr_ack) and for a batch (pgrr_send,
// pgrr_reply, pgrr_ack), both handed over with no claim, and for a batch that waits in the queue (a
// responder whose concurrency is below the batch: pgrr_send, then pgrr_claim), next to a `select 1` round
// trip on the same connection. What
// end-to-end runs cannot tell apart (the hops between processes, the other side's work) is out of the
// picture: this is the cost of the statements themselves.
//   node --import tsx bench/functions.ts [--rounds 5] [--calls 300] [--batch 50] [--database-url url]
//   (the options are parsed by bench/options.ts, as for `bench/run.ts --functions`)
//   node --import tsx bench/run.ts --functions
// Two real responder registrations (their sessions hold the presence locks and run the claims and replies:
// one with the batch as its concurrency, one with a concurrency of 1, which is handed nothing larger) and a
// caller connection, in the schema pgrr_bench_fn, dropped at the end. Rounds alternate the two sizes and
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
/** Served with a concurrency of 1: batches sent to it are queued and claimed. */
const QUEUED_SERVICE = 'bench_fn_queued'
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
  const queuedResponder = new pg.Client({ connectionString: url })
  await Promise.all([caller.connect(), responder.connect(), queuedResponder.connect()])
  const samples = new Map<string, { rows: number; medians: number[] }>()
  try {
    const register = async (session: pg.Client, service: string, concurrency: number) => {
      const [registration] = await query<{ responder_id: number; channel_id: number }>(session, statements.register, [
        service,
        'bench',
        process.pid,
        concurrency,
      ])
      if (registration === undefined) throw new Error('registration returned nothing')
      return { responder: registration.responder_id, channel: registration.channel_id }
    }
    const ids = await register(responder, SERVICE, options.batch)
    const queuedIds = await register(queuedResponder, QUEUED_SERVICE, 1)
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
    const sendBatch = async (service: string, size: number) => {
      const [sent, us] = await timed(() =>
        query<{ id: string; status: string }>(caller, statements.send, [
          REPLY_TO,
          Array(size).fill(service),
          Array(size).fill(payload),
          Array(size).fill(false),
          Array(size).fill(30_000),
          Array(size).fill(null),
          Array(size).fill(null),
        ]),
      )
      if (sent.some((row) => row.status !== 'ok')) throw new Error(`pgrr_send: ${sent.find((row) => row.status !== 'ok')?.status}`)
      return [sent.map((row) => row.id as string), us] as const
    }
    const replyBatch = (session: pg.Client, responderId: number, replyIds: string[]) =>
      timed(() =>
        query(session, statements.reply, [
          responderId,
          replyIds,
          Array(replyIds.length).fill(false),
          Array(replyIds.length).fill(payload.toUpperCase()),
          Array(replyIds.length).fill(false),
          Array(replyIds.length).fill(null),
          Array(replyIds.length).fill(null),
          null,
        ]),
      )

    for (let round = 0; round < options.rounds; round++) {
      for (const size of [1, options.batch]) {
        await admin.query(`vacuum ${SCHEMA}.pgrr_request`)
        const times: Record<'select 1' | 'send' | 'reply' | 'ack' | 'send, queued' | 'claim', number[]> = {
          'select 1': [],
          send: [],
          reply: [],
          ack: [],
          'send, queued': [],
          claim: [],
        }
        const calls = Math.max(1, Math.round(options.calls / size))
        for (let call = 0; call < calls; call++) {
          times['select 1'].push((await timed(() => caller.query('select 1')))[1])
          // Handed over: no claim. One request takes the scalar statements, as the library does.
          let handedIds: string[]
          if (size === 1) {
            const [[sent], sendUs] = await timed(() =>
              query<{ id: string; status: string }>(caller, statements.sendOne, [REPLY_TO, SERVICE, payload, false, 30_000, null, null]),
            )
            if (sent?.status !== 'ok') throw new Error(`pgrr_send_one: ${sent?.status}`)
            handedIds = [sent.id]
            times.send.push(sendUs)
            const [, replyUs] = await timed(() =>
              query(responder, statements.replyOne, [ids.responder, sent.id, false, payload.toUpperCase(), false, null, null]),
            )
            times.reply.push(replyUs)
          } else {
            const [sentIds, sendUs] = await sendBatch(SERVICE, size)
            handedIds = sentIds
            times.send.push(sendUs)
            times.reply.push((await replyBatch(responder, ids.responder, handedIds))[1])
          }
          times.ack.push((await timed(() => query(caller, statements.ack, [handedIds])))[1])
          if (size === 1) continue
          // Queued: more requests than the responder's concurrency, so a claim takes them.
          const [, queuedSendUs] = await sendBatch(QUEUED_SERVICE, size)
          const [claimed, claimUs] = await timed(() =>
            query<ClaimedRow>(queuedResponder, statements.claim, [queuedIds.responder, queuedIds.channel, size]),
          )
          if (claimed.length !== size) throw new Error(`pgrr_claim took ${claimed.length} of ${size}`)
          times['send, queued'].push(queuedSendUs)
          times.claim.push(claimUs)
          const claimedIds = claimed.map((row) => row.id)
          await replyBatch(queuedResponder, queuedIds.responder, claimedIds)
          await query(caller, statements.ack, [claimedIds])
        }
        for (const [step, values] of Object.entries(times)) {
          if (values.length > 0) record(`${step}${step === 'select 1' ? '' : ` ×${size}`}`, step === 'select 1' ? 1 : size, values)
        }
      }
    }
  } finally {
    await Promise.all([caller, responder, queuedResponder].map((client) => client.end().catch(() => {})))
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
  const lines = ['step            requests/call   µs/call   µs/request']
  for (const t of timings) lines.push(`${t.step.padEnd(16)}${String(t.rows).padStart(13)}${String(t.p50Us).padStart(10)}${String(t.perRowUs).padStart(13)}`)
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
