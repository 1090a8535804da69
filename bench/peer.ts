// The contract between the benchmark harness and one system under test. Each system implements a caller side
// and (except `floor-select1`) a responder side; the harness runs each side in its own Node process.

/** Where the servers are and which names to use; the same object is handed to both sides. */
export interface PeerConfig {
  databaseUrl: string
  natsUrl: string
  amqpUrl: string
  redisUrl: string
  /** Schema the orchestrator migrated pgrr into. */
  pgrrSchema: string
  /** Schema the orchestrator installed the proof of concept into. */
  pocSchema: string
  /** The service name (channel, subject, queue) every system routes on. */
  service: string
  /**
   * Channels the requests are spread over, round robin, each with the responder serving it (pgrr-ts,
   * pgrr-sql and nats only: `--channels`); 1 means `service` alone. @default 1
   */
  channels?: number
  /** `concurrency` of the pgrr responder's `serve()` (`--serve-concurrency`). @default 64 */
  serveConcurrency?: number
}

/** The names requests go to: `service`, or `service_0` … `service_<n-1>` with several channels. */
export function serviceNames(config: PeerConfig): string[] {
  const count = config.channels ?? 1
  return count <= 1 ? [config.service] : Array.from({ length: count }, (_, index) => `${config.service}_${index}`)
}

/** Picks the next of `names`, round robin. */
export function roundRobin(names: string[]): () => string {
  let next = 0
  return () => names[next++ % names.length] as string
}

/** A caller connected to its system, sized for `concurrency` requests in flight. */
export interface CallerSession {
  /**
   * Sends one request and resolves with the reply. `worker` (0 ≤ worker < concurrency) identifies the
   * closed-loop worker making the call, for systems that give each worker its own connection.
   */
  call(payload: string, worker: number): Promise<string>
  close(): Promise<void>
}

/** A responder serving `config.service` until closed. */
export interface ResponderSession {
  /** Version of the server this responder talks to, for the machine description. */
  serverVersion?: string
  close(): Promise<void>
}

export interface Peer {
  openCaller(config: PeerConfig, concurrency: number): Promise<CallerSession>
  /** Null for systems without a responder (the `select 1` floor). */
  startResponder: ((config: PeerConfig) => Promise<ResponderSession>) | null
}
