// What the batching measuring aids (floor-batch, batch-sketch, batch-row-sketch) share: statements that each
// take whatever queued while the one before ran, callers whose replies come back as JSON arrays of
// [id, reply], and the sketches' responder, which claims what a NOTIFY names and replies in batches.
import type pg from 'pg'
import type { PeerConfig, ResponderSession } from '../peer.ts'
import { openClient } from './floor-pg.ts'

/** Most bytes of one NOTIFY payload: PostgreSQL refuses more than 8000. */
const NOTIFY_MAX_BYTES = 7900

/**
 * `entries` as JSON arrays of at most NOTIFY_MAX_BYTES each, in order, `wrap` applied to each array (a prefix
 * the receiver needs, say): a batch of large requests or replies goes in several NOTIFYs.
 */
export function notifyChunks(entries: unknown[], wrap: (json: string) => string = (json) => json): string[] {
  const chunks: string[] = []
  let current: string[] = []
  let bytes = Buffer.byteLength(wrap('[]'))
  for (const entry of entries) {
    const json = JSON.stringify(entry)
    const size = Buffer.byteLength(json) + 1
    if (current.length > 0 && bytes + size > NOTIFY_MAX_BYTES) {
      chunks.push(wrap(`[${current.join(',')}]`))
      current = []
      bytes = Buffer.byteLength(wrap('[]'))
    }
    current.push(json)
    bytes += size
  }
  if (current.length > 0) chunks.push(wrap(`[${current.join(',')}]`))
  return chunks
}

/** Statements running at once on each side, each on a connection of its own (as pgrr-ts runs two). */
const STATEMENTS_AT_ONCE = 2

/** A connection for each statement that may run at once. */
export async function openClients(databaseUrl: string, role: string): Promise<pg.Client[]> {
  return await Promise.all(Array.from({ length: STATEMENTS_AT_ONCE }, () => openClient(databaseUrl, role)))
}

/**
 * Runs `run` on batches of what was pushed: each of `clients` runs one batch at a time, and a push while all
 * are busy waits for the next batch.
 */
export function batcher<T>(clients: pg.Client[], run: (client: pg.Client, batch: T[]) => Promise<void>): (item: T) => void {
  const idle = [...clients]
  let queued: T[] = []
  const next = (): void => {
    const client = idle.pop()
    if (client === undefined) return
    const batch = queued
    queued = []
    // A run handles its statement's failure; anything else it throws must not stop the batches.
    void run(client, batch).catch(() => undefined).finally(() => {
      idle.push(client)
      if (queued.length > 0) next()
    })
  }
  return (item) => {
    queued.push(item)
    if (queued.length === 1) next()
  }
}

export interface Waiter {
  resolve: (reply: string) => void
  reject: (error: unknown) => void
}

/** A caller's LISTEN connection, with `onReply` handed every NOTIFY it hears, and its senders. */
export async function openBatchCaller(
  config: PeerConfig,
  role: string,
  onReply: (payload: string) => void,
): Promise<{ replyChannel: string; senders: pg.Client[]; close: () => Promise<void> }> {
  const [listen, senders] = await Promise.all([openClient(config.databaseUrl, `${role}-listen`), openClients(config.databaseUrl, role)])
  const replyChannel = `${config.service}_${role.replaceAll('-', '_')}_${process.pid}`
  listen.on('notification', ({ payload = '' }) => onReply(payload))
  await listen.query(`listen "${replyChannel}"`)
  return { replyChannel, senders, close: async () => void (await Promise.all([listen, ...senders].map((client) => client.end()))) }
}

/** Resolves the waiters of a NOTIFY carrying a JSON array of [id, reply]. */
export function resolveEach(waiting: Map<string, Waiter>, payload: string): void {
  for (const [id, reply] of JSON.parse(payload) as [string, string][]) {
    waiting.get(id)?.resolve(reply)
    waiting.delete(id)
  }
}

/** The responder of a sketch: its table, the ids a NOTIFY names, how a claimed row is answered. */
export interface SketchResponder<Row> {
  role: string
  schema: string
  /** `create unlogged table if not exists …` */
  createTable: string
  requestChannel: string
  /** Claims the ids ($1, text[]) not claimed yet, returning the rows to answer. */
  claim: { name: string; text: string }
  /** Deletes the answered rows ($1: their ids, text[]) and NOTIFYs their callers ($2: what `answer` made). */
  reply: { name: string; text: string }
  /** A claimed row's id and what the reply statement takes for it. */
  answer: (row: Row) => { id: string; answers: string[] }
}

/**
 * Starts a sketch's responder: claims and replies share its connections, whichever is free taking the next
 * batch of either (a claim and a reply each on connections of their own gave less: more, smaller statements).
 */
export async function startSketchResponder<Row>(config: PeerConfig, sketch: SketchResponder<Row>): Promise<ResponderSession> {
  const [listen, workers] = await Promise.all([
    openClient(config.databaseUrl, `${sketch.role}-listen`),
    openClients(config.databaseUrl, sketch.role),
  ])
  const [first] = workers as [pg.Client]
  await first.query(`create schema if not exists ${sketch.schema}`)
  await first.query(sketch.createTable)
  type Work = { claim: string } | { id: string; answers: string[] }
  const work = batcher<Work>(workers, async (client, batch) => {
    const claims: string[] = []
    const ids: string[] = []
    const answers: string[] = []
    for (const item of batch) {
      if ('claim' in item) claims.push(item.claim)
      else {
        ids.push(item.id)
        answers.push(...item.answers)
      }
    }
    // A failure shows up as a timeout on the caller's side.
    if (ids.length > 0) await client.query({ ...sketch.reply, values: [ids, answers] }).catch(() => {})
    if (claims.length === 0) return
    const claimed = await client.query<Row & pg.QueryResultRow>({ ...sketch.claim, values: [claims] }).catch(() => ({ rows: [] as Row[] }))
    for (const row of claimed.rows) work(sketch.answer(row))
  })
  // A request NOTIFY: a JSON array of ids (several NOTIFYs for a large batch, see notifyChunks).
  listen.on('notification', ({ payload = '' }) => {
    for (const id of JSON.parse(payload) as string[]) work({ claim: id })
  })
  await listen.query(`listen "${sketch.requestChannel}"`)
  const { rows } = await first.query<{ server_version: string }>('show server_version')
  return {
    serverVersion: rows[0]?.server_version,
    close: async () => void (await Promise.all([listen, ...workers].map((client) => client.end()))),
  }
}
