/**
 * Telemetry hook points. The client and the server call these at the edges of every request and handler;
 * metrics (prom-client) and tracing (OpenTelemetry) are implementations. A `Telemetry` must never throw and
 * must be cheap: it runs on the hot path.
 */

/** Outcome of a request or handler: `'ok'` or the error's `code` (e.g. `'TIMEOUT'`). */
export type Outcome = string

/** Ends the observation of one request (caller side). */
export interface RequestObservation {
  /** Called exactly once with the outcome. */
  end(outcome: Outcome, error?: Error): void
}

/** Wraps one handler execution (responder side). */
export interface HandlerObservation {
  /** Runs the handler in the observation's context (tracing makes its span current there). */
  run<T>(fn: () => T): T
  /** Called exactly once with the outcome. */
  end(outcome: Outcome, error?: unknown): void
}

export interface RequestInfo {
  channel: string
  /** Headers about to be sent. An implementation may add to them (a `traceparent`). */
  headers: Record<string, string>
}

export interface HandlerInfo {
  channel: string
  id: string
  attempt: number
  headers: Readonly<Record<string, string>>
  /** Time the request waited in the table before this claim, in milliseconds. */
  queuedMs: number
}

/** Hook points; every member is optional. */
export interface Telemetry {
  /** A caller starts a request (before it is queued). */
  requestStarted?(info: RequestInfo): RequestObservation | undefined
  /** A responder starts a handler. */
  handlerStarted?(info: HandlerInfo): HandlerObservation | undefined
  /** A connection came back: `listener` (a client's LISTEN session) or `responder` (a server's session). */
  reconnected?(component: 'listener' | 'responder', channel?: string): void
  /** A server claimed `count` requests of `channel` in one statement. */
  claimed?(channel: string, count: number): void
  /** A client wrote `count` requests in one statement (its requests are batched while a send is running). */
  sent?(count: number): void
  /** A server wrote the outcomes of `count` requests of `channel` in one statement. */
  replied?(channel: string, count: number): void
  /**
   * `count` replies of a server to requests of `channel` came after their deadline (the handler finished
   * late, its event loop blocked or its process stopped): each was discarded, its caller's outcome is the
   * timeout.
   */
  repliedLate?(channel: string, count: number): void
}

/** Combines several implementations into one. */
export function combineTelemetry(parts: readonly Telemetry[]): Telemetry {
  // No hooks at all when there is nothing to call: callers skip the work behind a hook that is absent.
  if (parts.length === 0) return {}
  if (parts.length === 1 && parts[0] !== undefined) return parts[0]
  return {
    requestStarted(info) {
      const observations = parts.map((part) => part.requestStarted?.(info)).filter((o) => o !== undefined)
      if (observations.length === 0) return undefined
      return { end: (outcome, error) => observations.forEach((o) => o.end(outcome, error)) }
    },
    handlerStarted(info) {
      const observations = parts.map((part) => part.handlerStarted?.(info)).filter((o) => o !== undefined)
      if (observations.length === 0) return undefined
      return {
        run: <T>(fn: () => T): T => observations.reduceRight<() => T>((inner, o) => () => o.run(inner), fn)(),
        end: (outcome, error) => observations.forEach((o) => o.end(outcome, error)),
      }
    },
    reconnected: (component, channel) => parts.forEach((part) => part.reconnected?.(component, channel)),
    claimed: (channel, count) => parts.forEach((part) => part.claimed?.(channel, count)),
    sent: (count) => parts.forEach((part) => part.sent?.(count)),
    replied: (channel, count) => parts.forEach((part) => part.replied?.(channel, count)),
    repliedLate: (channel, count) => parts.forEach((part) => part.repliedLate?.(channel, count)),
  }
}
