/**
 * What a client shares with the responders it starts (`client.serve()`): its connections, its settings and
 * its telemetry. Its own module, so that the client and the responder import it and not each other.
 */
import type { Pool } from '../database.ts'
import type { Listener } from '../listener.ts'
import type { Logger } from '../logger.ts'
import type { ClientOptions } from '../options.ts'
import type { Statements } from '../statements.ts'
import type { ClientResponders } from '../responder/client-responders.ts'
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
  /** What the client's responders share, once for all of them (src/responder/client-responders.ts). */
  readonly responders: ClientResponders
}
