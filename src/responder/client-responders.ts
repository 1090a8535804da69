/**
 * What a client's responders share, each part once for all of them however many channels they serve: the
 * session they register on (responder-session.ts), the queue their outcomes are written from
 * (replies.ts), their lease renewals (lease.ts), their polls (polls.ts) and their sweeps (sweeps.ts).
 */
import type { Pool, PoolQuery, SessionOptions } from '../database.ts'
import type { Logger } from '../logger.ts'
import type { Statements } from '../statements.ts'
import { Leases } from './lease.ts'
import { Polls } from './polls.ts'
import { ReplyQueue } from './replies.ts'
import { ResponderSession } from './responder-session.ts'
import { Sweeps } from './sweeps.ts'

/** The parts a client's responders share. */
export class ClientResponders {
  /** The session they register on. */
  readonly session: ResponderSession
  /** Their outcomes, written together. */
  readonly replies = new ReplyQueue()
  /** Their leases, renewed in one statement. */
  readonly leases: Leases
  /** Their polls, one statement on the pool. */
  readonly polls: Polls
  /** Their sweeps, once for all of them. */
  readonly sweeps: Sweeps

  constructor(options: {
    connection: SessionOptions
    pool: Pool
    poolQuery: PoolQuery
    statements: Statements
    logger: Logger
  }) {
    const { connection, pool, poolQuery, statements, logger } = options
    this.session = new ResponderSession({ connection, statements, logger })
    this.leases = new Leases({ statements, logger })
    this.polls = new Polls({ poolQuery, statements, logger })
    this.sweeps = new Sweeps({ pool, poolQuery, statements, logger })
  }
}
