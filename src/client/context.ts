/**
 * What a client shares with the responders it starts (`client.serve()`): its connections, its settings and
 * its telemetry. Its own module, so that the client and the responder import it and not each other.
 */
import type { Pool } from '../database.ts'
import type { Listener } from '../listener.ts'
import type { Logger } from '../logger.ts'
import type { ClientOptions } from '../options.ts'
import type { Statements } from '../statements.ts'
import type { Leases } from '../responder/lease.ts'
import type { Polls } from '../responder/polls.ts'
import type { ReplyQueue } from '../responder/replies.ts'
import type { ResponderSession } from '../responder/responder-session.ts'
import type { Sweeps } from '../responder/sweeps.ts'
import type { Telemetry } from '../telemetry.ts'

/** Parts of the client its servers share. */
export interface ClientContext {
  readonly options: ClientOptions
  readonly schema: string
  readonly statements: Statements
  readonly listener: Listener
  /** The client's pool. */
  readonly pool: Pool
  readonly logger: Logger
  readonly telemetry: Telemetry
  readonly host: string
  /** LISTEN does not deliver (a transaction pooler): replies are polled for. */
  readonly polling: boolean
  /** The sweeps of the client's responders, run once for all of them (src/responder/sweeps.ts). */
  readonly sweeps: Sweeps
  /** The polls of the client's responders, one statement for all of them (src/responder/polls.ts). */
  readonly polls: Polls
  /** The leases of the client's responders, renewed together (src/responder/lease.ts). */
  readonly leases: Leases
  /** The outcomes of the client's responders, written together (src/responder/replies.ts). */
  readonly replies: ReplyQueue
  /** The session all the client's responders register on (src/responder/responder-session.ts). */
  readonly responderSession: ResponderSession
}
