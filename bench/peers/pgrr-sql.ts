// This project called from plain SQL (request + await_reply on one connection per concurrent caller), served
// by the same TypeScript responder as pgrr-ts.
import { openSqlCaller } from './sql-caller.ts'
import { startPgrrResponder } from './pgrr-ts.ts'
import { serviceNames, type Peer } from '../peer.ts'

export const peer: Peer = {
  openCaller: (config, concurrency) =>
    openSqlCaller({
      databaseUrl: config.databaseUrl,
      role: 'pgrr-sql-caller',
      schema: config.pgrrSchema,
      services: serviceNames(config),
      concurrency,
    }),
  startResponder: startPgrrResponder,
}
