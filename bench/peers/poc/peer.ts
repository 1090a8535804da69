// The proof of concept as a benchmark system: SQL caller (request + await_reply) → serial responder.
import { transform } from '../../payload.ts'
import { openSqlCaller } from '../sql-caller.ts'
import { startPocResponder } from './responder.ts'
import type { Peer } from '../../peer.ts'

export const peer: Peer = {
  openCaller: (config, concurrency) =>
    openSqlCaller({
      databaseUrl: config.databaseUrl,
      role: 'poc-caller',
      schema: config.pocSchema,
      services: [config.service],
      concurrency,
    }),
  startResponder: (config) =>
    startPocResponder({
      databaseUrl: config.databaseUrl,
      schema: config.pocSchema,
      channel: config.service,
      handler: transform,
    }),
}
