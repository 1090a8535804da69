/**
 * A responder's registration (05_registration.sql): what pgrr_register gives it, and what the parts of a
 * responder are told about it and about the server's lifecycle. A registration lasts until it is released
 * or its session ends (a client's responders share one, responder-session.ts); each new one gets the next
 * generation, so that what belonged to a lost or released registration is recognised and dropped. It is
 * opened here: openRegistration().
 */
import { query, type Session } from '../database.ts'
import { toPgrrError } from '../database-error.ts'
import type { Listener, NotificationHandler } from '../listener.ts'
import type { Logger } from '../logger.ts'
import type { ResponderSession, SessionMember } from './responder-session.ts'
import type { Statements } from '../statements.ts'
import type { Telemetry } from '../telemetry.ts'

/** Lifecycle of a server. */
export type ServerState = 'starting' | 'running' | 'reconnecting' | 'draining' | 'closed'

/** The registration the responder works under. */
export interface Registration {
  responderId: number
  channelId: number
  serviceChannel: string
  controlChannel: string
  generation: number
}

/** What pgrr_register returns: the ids, and the NOTIFY channels to LISTEN on. */
export interface RegisteredRow {
  responder_id: number
  channel_id: number
  service_channel: string
  control_channel: string
  inbox_channel: string
}

/** Runs a statement on the work session; rejects with ConnectionError between sessions. */
export type WorkQuery = <Row = Record<string, unknown>>(text: string, values: unknown[]) => Promise<Row[]>

/**
 * What every part of a responder is given by its server, which owns the state behind it: read through
 * these functions, never kept (a registration may end at any await).
 */
export interface ResponderContext {
  readonly channel: string
  readonly statements: Statements
  readonly logger: Logger
  readonly telemetry: Telemetry
  /** The current registration, undefined between sessions. */
  readonly registration: () => Registration | undefined
  /** The generation of the latest registration (it moves on when the session is lost or recycled). */
  readonly generation: () => number
  /** Runs a statement on the work session. */
  readonly query: WorkQuery
}

/** Registers a responder of `channel` on `work`, whose session then holds its responder lock. */
export async function register(
  work: Session,
  statements: Statements,
  channel: string,
  host: string,
  concurrency: number,
  info: string | null = null,
): Promise<RegisteredRow> {
  // What the responder says it is (16_services.sql) goes in the same statement: live, it is described.
  const rows = info === null
    ? await query(work, statements.register, [channel, host, process.pid, concurrency])
    : await query(work, statements.registerDescribed, [channel, host, process.pid, concurrency, info])
  return rows[0] as unknown as RegisteredRow
}

/** The UNLISTEN of each NOTIFY channel a registration LISTENs on. */
export interface Unlisteners {
  service: () => Promise<void>
  control: () => Promise<void>
  inbox: () => Promise<void>
}

/** Who hears a registration's channels. */
export interface RegistrationHandlers {
  readonly service: NotificationHandler
  readonly control: NotificationHandler
  readonly inbox: NotificationHandler
}

/**
 * Opens a registration: pgrr_register on the client's responders' session (`member` joins it, and is told
 * when it is lost), then LISTEN on its service, control and inbox channels. When any step fails, nothing of
 * it is left: the registration is released, or the session ended when no other registration is on it.
 */
export async function openRegistration(
  sessions: ResponderSession,
  member: SessionMember,
  listener: Listener,
  statements: Statements,
  registration: { channel: string; host: string; concurrency: number; info: string | null },
  handlers: RegistrationHandlers,
  waitMs: number,
): Promise<{ work: Session; row: RegisteredRow; unlisten: Unlisteners }> {
  const work = await sessions.join(member)
  let row: RegisteredRow
  try {
    const { channel, host, concurrency, info } = registration
    row = await register(work, statements, channel, host, concurrency, info)
  } catch (error) {
    await sessions.leave(member, work, undefined, waitMs)
    throw toPgrrError(error)
  }
  try {
    const unlisten = {
      service: await listener.listen(row.service_channel, handlers.service),
      control: await listener.listen(row.control_channel, handlers.control),
      inbox: await listener.listen(row.inbox_channel, handlers.inbox),
    }
    return { work, row, unlisten }
  } catch (error) {
    await sessions.leave(member, work, row.responder_id, waitMs)
    throw error
  }
}
